'use strict';
// Unit tests of handle(): `node --test` (or `npm test`).

const test = require('node:test');
const assert = require('node:assert');
const { handle } = require('./func');
const { fromHttp, toHttp } = require('./cloudevent');

const order = { specversion: '1.0', id: '1', source: '/shop', type: 'com.example.order', data: { item: 'book' } };

test('answers an event with its data', async () => {
  const reply = await handle(order);
  assert.strictEqual(reply.type, 'com.example.order.reply');
  assert.strictEqual(reply.subject, '1');
  assert.deepStrictEqual(reply.data, { item: 'book' });
});

test('does not answer a reply', async () => {
  assert.strictEqual(await handle({ ...order, type: 'com.example.order.reply' }), undefined);
});

test('binary and structured requests give the same event', async () => {
  const binary = fromHttp(
    {
      'ce-specversion': '1.0',
      'ce-id': '1',
      'ce-source': '/shop',
      'ce-type': 'com.example.order',
      'content-type': 'application/json',
    },
    Buffer.from('{"item":"book"}'),
  );
  const structured = fromHttp(
    { 'content-type': 'application/cloudevents+json' },
    Buffer.from(JSON.stringify({ ...order, datacontenttype: 'application/json' })),
  );
  assert.deepStrictEqual(binary, structured);
  const { headers, body } = toHttp(await handle(binary));
  assert.strictEqual(headers['ce-type'], 'com.example.order.reply');
  assert.strictEqual(body.toString(), '{"item":"book"}');
});
