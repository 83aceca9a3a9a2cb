#!/usr/bin/env node
'use strict';
// Serves the function in func.js over HTTP: the harness of serval's node/http template.
//
// It uses Node's standard library only. Edit func.js; this file rarely needs a change.
//
//   PORT       the port to listen on (default 8080; serval sets it)
//   BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)
//
// SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
// (at most 10 s) and exits 0.

const http = require('node:http');
const { handle } = require('./func');

const DRAIN_MS = 10_000;

/** The request as func.handle() gets it: method, path, query, headers, body (a Buffer). */
async function toRequest(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const url = new URL(req.url, 'http://localhost');
  const query = {};
  for (const [name, value] of url.searchParams) {
    if (!(name in query)) query[name] = value;
  }
  return { method: req.method, path: url.pathname, query, headers: req.headers, body: Buffer.concat(chunks) };
}

/** func.handle()'s result, {status, headers, body}, as status, headers and bytes. */
function toResponse(result) {
  const { status = 200, headers = {}, body } = result || {};
  const out = { ...headers };
  let bytes;
  let type;
  if (body === undefined || body === null) {
    bytes = Buffer.alloc(0);
  } else if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    [bytes, type] = [Buffer.from(body), 'application/octet-stream'];
  } else if (typeof body === 'string') {
    [bytes, type] = [Buffer.from(body), 'text/plain; charset=utf-8'];
  } else {
    [bytes, type] = [Buffer.from(JSON.stringify(body)), 'application/json'];
  }
  if (bytes.length > 0 && !Object.keys(out).some((k) => k.toLowerCase() === 'content-type')) {
    out['content-type'] = type;
  }
  out['content-length'] = bytes.length;
  return { status, headers: out, bytes };
}

async function serve(req, res) {
  let response;
  try {
    response = toResponse(await handle(await toRequest(req)));
  } catch (err) {
    console.error(err);
    response = toResponse({ status: 500, body: 'internal error\n' });
  }
  res.writeHead(response.status, response.headers);
  res.end(req.method === 'HEAD' ? undefined : response.bytes);
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

module.exports = { toRequest, toResponse };
