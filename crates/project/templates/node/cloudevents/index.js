#!/usr/bin/env node
'use strict';
// Serves the function in func.js: the harness of serval's node/cloudevents template.
//
// Every POST is read as a CloudEvent (binary or structured content mode, see
// cloudevent.js) and handed to func.handle(); the event it returns goes back in binary
// mode (200), none is 204 No Content, an invalid event 400. Node's standard library
// only. Edit func.js; this file rarely needs a change.
//
//   PORT       the port to listen on (default 8080; serval sets it)
//   BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)
//
// SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
// (at most 10 s) and exits 0.

const http = require('node:http');
const { handle } = require('./func');
const { InvalidEvent, fromHttp, toHttp } = require('./cloudevent');

const DRAIN_MS = 10_000;

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** The answer to one request: {status, headers, body}. */
async function answer(req) {
  const text = (status, message) => ({ status, headers: { 'content-type': 'text/plain' }, body: Buffer.from(message) });
  if (req.method !== 'POST') return { ...text(405, 'send CloudEvents with POST\n'), headers: { allow: 'POST' } };
  let event;
  try {
    event = fromHttp(req.headers, await readBody(req));
  } catch (err) {
    if (err instanceof InvalidEvent) return text(400, `${err.message}\n`);
    throw err;
  }
  const reply = await handle(event);
  if (reply === undefined || reply === null) return { status: 204, headers: {}, body: Buffer.alloc(0) };
  return { status: 200, ...toHttp(reply) };
}

async function serve(req, res) {
  let response;
  try {
    response = await answer(req);
  } catch (err) {
    console.error(err);
    response = { status: 500, headers: { 'content-type': 'text/plain' }, body: Buffer.from('internal error\n') };
  }
  res.writeHead(response.status, { ...response.headers, 'content-length': response.body.length });
  res.end(response.body);
  console.log(`"${req.method} ${req.url} HTTP/${req.httpVersion}" ${response.status}`);
}

function main() {
  const address = process.env.BIND_ADDR || '0.0.0.0';
  const port = Number(process.env.PORT || 8080);
  const server = http.createServer(serve);
  server.listen(port, address, () => {
    console.log(`{{name}} listening on ${address}:${server.address().port}`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections?.();
    setTimeout(() => process.exit(0), DRAIN_MS).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) main();

module.exports = { answer };
