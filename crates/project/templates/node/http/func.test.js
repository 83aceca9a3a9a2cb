'use strict';
// Unit tests of handle(): `node --test` (or `npm test`).

const test = require('node:test');
const assert = require('node:assert');
const { handle } = require('./func');
const { toResponse } = require('./index');

const request = (fields) => ({ method: 'GET', path: '/', query: {}, headers: {}, body: Buffer.alloc(0), ...fields });

test('greets by name', async () => {
  const response = await handle(request({ query: { name: 'serval' } }));
  assert.strictEqual(response.body, 'Hello, serval!\n');
});

test('greets the world without a name', async () => {
  assert.strictEqual((await handle(request())).body, 'Hello, World!\n');
});

test('answers a POST with JSON', async () => {
  const response = toResponse(await handle(request({ method: 'POST', body: Buffer.from('hi') })));
  assert.strictEqual(response.status, 200);
  assert.strictEqual(response.headers['content-type'], 'application/json');
  assert.strictEqual(response.bytes.toString(), '{"received":"hi"}');
});
