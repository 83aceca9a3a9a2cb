#!/usr/bin/env node
// Stand-in for the container images of Knative's documentation samples, run as a
// plain host process (Node.js standard library only). See README.md next to it.
//
//   PORT=8080 node stand-in.js MODE
//
// MODE is one of appender, event-display, filter, transformer, switcher. The process
// listens on 127.0.0.1:$PORT (default 8080), receives CloudEvents 1.0 over HTTP in
// binary or structured mode and, when it answers with an event, answers in binary
// mode; when it does not, with an empty 200 (event-display: an empty 202).
'use strict';

const http = require('http');

const USAGE = `usage: PORT=8080 node stand-in.js MODE

modes (configured by the same environment variables as the sample images):
  appender       MESSAGE (appended to data.message), TYPE (optional new type)
  event-display  logs each event to stdout like Knative's event_display
  filter         FILTER: JS expression over \`event\`; truthy -> reply the event
  transformer    TRANSFORMER: JS expression over \`event\`; reply with it as data
  switcher       EXPRESSION: JS expression over \`event\`, CASES: JSON array;
                 POST /<n> replies the event when EXPRESSION === CASES[n]
`;

const MAX_BODY = 10 * 1024 * 1024;
const STRUCTURED = 'application/cloudevents+json';
// Attributes with a meaning of their own; anything else is an extension.
const STRING_ATTRIBUTES = ['id', 'source', 'type', 'subject', 'time', 'dataschema'];
const RESERVED = new Set(['specversion', 'datacontenttype', 'data', 'data_base64', ...STRING_ATTRIBUTES]);
const EXTENSION_NAME = /^[a-z0-9]+$/;

// ---------------------------------------------------------------------------
// Configuration

const mode = process.argv[2];
const MODES = ['appender', 'event-display', 'filter', 'transformer', 'switcher'];
if (!MODES.includes(mode)) {
  process.stderr.write(mode === undefined ? USAGE : `unknown mode '${mode}'\n\n${USAGE}`);
  process.exit(2);
}

function die(message) {
  process.stderr.write(`stand-in ${mode}: ${message}\n`);
  process.exit(1);
}

/** An environment variable holding a JavaScript expression (or JSON): trimmed. */
function envExpression(name) {
  const value = (process.env[name] || '').trim().replace(/;+\s*$/, '');
  if (!value) die(`environment variable ${name} is missing`);
  return value;
}

/** Compiles a JavaScript expression into a function of `event` (and `env`). */
function compile(name, source) {
  try {
    return new Function('event', 'env', `return (${source}\n);`);
  } catch (e) {
    die(`${name} is not a valid JavaScript expression: ${e.message}\n  ${source}`);
  }
}

const config = {};
if (mode === 'appender') {
  // YAML block scalars end with a newline; the leading space of " - Handled by 0" matters.
  config.message = process.env.MESSAGE === undefined
    ? 'boring default msg, change me with env[MESSAGE]'
    : process.env.MESSAGE.replace(/[\r\n]+$/, '');
  config.type = (process.env.TYPE || '').trim();
} else if (mode === 'filter') {
  config.filter = compile('FILTER', envExpression('FILTER'));
} else if (mode === 'transformer') {
  config.transformer = compile('TRANSFORMER', envExpression('TRANSFORMER'));
} else if (mode === 'switcher') {
  config.expression = compile('EXPRESSION', envExpression('EXPRESSION'));
  const cases = envExpression('CASES');
  try {
    config.cases = JSON.parse(cases);
  } catch (e) {
    die(`CASES is not valid JSON: ${e.message}`);
  }
  if (!Array.isArray(config.cases)) die('CASES must be a JSON array');
}

// ---------------------------------------------------------------------------
// CloudEvents over HTTP (binary and structured content modes)

class BadRequest extends Error {}

function essence(contentType) {
  return (contentType || '').split(';')[0].trim().toLowerCase();
}

function isJsonType(contentType) {
  const e = essence(contentType);
  return e.endsWith('/json') || e.endsWith('+json');
}

/** §3.1.3.2: trim, unquote a quoted-string, percent-decode (a stray '%' stays as is). */
function decodeHeaderValue(raw) {
  let value = raw.trim();
  if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
    value = value.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  const bytes = Buffer.from(value, 'latin1');
  const out = [];
  for (let i = 0; i < bytes.length; i++) {
    const hex = bytes[i] === 0x25 ? bytes.toString('latin1', i + 1, i + 3) : '';
    if (/^[0-9a-fA-F]{2}$/.test(hex)) {
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      out.push(bytes[i]);
    }
  }
  return Buffer.from(out).toString('utf8');
}

/** §3.1.3.2: percent-encode space, '"', '%' and everything outside printable ASCII. */
function encodeHeaderValue(value) {
  let out = '';
  for (const ch of String(value)) {
    const c = ch.codePointAt(0);
    if (c > 0x20 && c < 0x7f && ch !== '"' && ch !== '%') {
      out += ch;
    } else {
      for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return out;
}

/**
 * The event in memory:
 *   { specversion, id, source, type, subject?, time?, dataschema?, datacontenttype?,
 *     extensions: {name: string|number|boolean},
 *     data?: { kind: 'json', value } | { kind: 'text', value: string } | { kind: 'binary', bytes },
 *     body?: Buffer   // the data exactly as received, to forward an unchanged event }
 */
function checkRequired(event) {
  if (event.specversion === undefined) throw new BadRequest('missing specversion: not a CloudEvent');
  if (event.specversion !== '1.0') throw new BadRequest(`unsupported specversion '${event.specversion}' (expected 1.0)`);
  for (const name of ['id', 'source', 'type']) {
    if (typeof event[name] !== 'string' || event[name] === '') {
      throw new BadRequest(`missing or empty required attribute '${name}'`);
    }
  }
}

/** Binary-mode body → data: JSON when the content type says so (or there is none and the body parses). */
function bodyToData(contentType, body) {
  if (body.length === 0) return undefined;
  const text = body.toString('utf8');
  if (isJsonType(contentType) || (!contentType && /^\s*[[{"]/.test(text))) {
    try {
      return { kind: 'json', value: JSON.parse(text) };
    } catch (e) {
      // Declared (or looked like) JSON but is not: keep it as a string.
    }
  }
  return { kind: 'text', value: text };
}

function decodeBinary(req, body) {
  const event = { extensions: {} };
  const headers = req.headersDistinct;
  for (const name of Object.keys(headers)) {
    if (!name.startsWith('ce-')) continue;
    const attr = name.slice(3);
    if (headers[name].length !== 1) throw new BadRequest(`header ${name} appears more than once`);
    const value = decodeHeaderValue(headers[name][0]);
    if (attr === 'specversion' || STRING_ATTRIBUTES.includes(attr)) {
      event[attr] = value;
    } else if (attr === 'datacontenttype') {
      // Binary mode carries it in Content-Type; accept the header only when that is absent.
      if (!req.headers['content-type']) event.datacontenttype = value;
    } else if (EXTENSION_NAME.test(attr)) {
      event.extensions[attr] = value;
    } else {
      throw new BadRequest(`invalid attribute name '${attr}' in header ${name} (lowercase letters and digits only)`);
    }
  }
  if (event.specversion === undefined) {
    throw new BadRequest('not a CloudEvent: no ce-specversion header and Content-Type is not application/cloudevents+json');
  }
  checkRequired(event);
  if (req.headers['content-type']) event.datacontenttype = req.headers['content-type'].trim();
  event.data = bodyToData(event.datacontenttype, body);
  if (event.data) event.body = body;
  return event;
}

function decodeStructured(body) {
  let json;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new BadRequest(`structured-mode body is not valid JSON: ${e.message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new BadRequest('structured-mode body must be a JSON object (one CloudEvent)');
  }
  const event = { extensions: {} };
  for (const [name, value] of Object.entries(json)) {
    if (name === 'data' || name === 'data_base64') continue;
    if (name === 'specversion' || name === 'datacontenttype' || STRING_ATTRIBUTES.includes(name)) {
      if (typeof value !== 'string') throw new BadRequest(`attribute '${name}' must be a string`);
      event[name] = value;
    } else if (!EXTENSION_NAME.test(name)) {
      throw new BadRequest(`invalid attribute name '${name}' (lowercase letters and digits only)`);
    } else if (value === null) {
      // A null attribute is an absent one.
    } else if (typeof value === 'string' || typeof value === 'boolean' || Number.isInteger(value)) {
      event.extensions[name] = value;
    } else {
      throw new BadRequest(`extension '${name}' must be a string, an integer or a boolean`);
    }
  }
  checkRequired(event);
  if ('data' in json && 'data_base64' in json) throw new BadRequest('both data and data_base64 are present');
  if ('data_base64' in json) {
    if (typeof json.data_base64 !== 'string') throw new BadRequest('data_base64 must be a string');
    event.data = { kind: 'binary', bytes: Buffer.from(json.data_base64, 'base64') };
  } else if ('data' in json) {
    const ct = event.datacontenttype;
    event.data = typeof json.data === 'string' && ct && !isJsonType(ct)
      ? { kind: 'text', value: json.data }
      : { kind: 'json', value: json.data };
  }
  return event;
}

function decodeRequest(req, body) {
  const ct = essence(req.headers['content-type']);
  if (ct === STRUCTURED) return decodeStructured(body);
  if (ct.startsWith('application/cloudevents')) {
    throw new BadRequest(`unsupported CloudEvents format '${ct}' (only binary mode and ${STRUCTURED})`);
  }
  return decodeBinary(req, body);
}

/** The value of `data` as JavaScript sees it: parsed JSON, or a string. */
function dataValue(event) {
  const d = event.data;
  if (!d) return undefined;
  if (d.kind === 'binary') return d.bytes.toString('utf8');
  return d.value;
}

/** The `event` object the expressions see: attributes, extensions flattened, and data. */
function eventObject(event) {
  const obj = { ...event.extensions };
  for (const name of ['specversion', 'datacontenttype', ...STRING_ATTRIBUTES]) {
    if (event[name] !== undefined) obj[name] = event[name];
  }
  const data = dataValue(event);
  obj.data = data === undefined ? undefined : structuredClone(data);
  return obj;
}

/** A copy of the event whose data is the given JSON value, as application/json. */
function withJsonData(event, value) {
  const out = { ...event, extensions: { ...event.extensions }, datacontenttype: 'application/json' };
  delete out.body;
  out.data = { kind: 'json', value: value === undefined ? null : value };
  return out;
}

function dataBytes(event) {
  if (event.body) return event.body;
  const d = event.data;
  if (!d) return Buffer.alloc(0);
  if (d.kind === 'binary') return d.bytes;
  if (d.kind === 'text') return Buffer.from(d.value, 'utf8');
  if (typeof d.value === 'string' && event.datacontenttype && !isJsonType(event.datacontenttype)) {
    return Buffer.from(d.value, 'utf8');
  }
  return Buffer.from(JSON.stringify(d.value), 'utf8');
}

// ---------------------------------------------------------------------------
// Replies

function sendEvent(res, event) {
  const headers = {
    'ce-specversion': event.specversion,
    'ce-id': encodeHeaderValue(event.id),
    'ce-source': encodeHeaderValue(event.source),
    'ce-type': encodeHeaderValue(event.type),
  };
  for (const name of ['subject', 'time', 'dataschema']) {
    if (event[name] !== undefined) headers[`ce-${name}`] = encodeHeaderValue(event[name]);
  }
  for (const [name, value] of Object.entries(event.extensions)) {
    headers[`ce-${name}`] = encodeHeaderValue(value);
  }
  const body = dataBytes(event);
  const contentType = event.datacontenttype || (event.data && event.data.kind === 'json' ? 'application/json' : undefined);
  if (contentType && event.data) headers['content-type'] = contentType;
  headers['content-length'] = String(body.length);
  res.writeHead(200, headers);
  res.end(body);
}

function sendEmpty(res, status = 200) {
  res.writeHead(status, { 'content-length': '0' });
  res.end();
}

function sendError(res, status, message, extra = {}) {
  const body = Buffer.from(JSON.stringify({ error: message }) + '\n', 'utf8');
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...extra });
  res.end(body);
}

// ---------------------------------------------------------------------------
// Modes

function describe(event) {
  return `id=${event.id} source=${event.source} type=${event.type}`;
}

function appender(event, req, res) {
  // Like the Go sample: data decodes into {id int, message string}; the reply's data is
  // exactly that struct, re-encoded as application/json, so other fields are dropped.
  let value = {};
  if (event.data) {
    if (event.data.kind !== 'json' || event.data.value === null || typeof event.data.value !== 'object' ||
        Array.isArray(event.data.value)) {
      throw new BadRequest('got error while unmarshalling data: data must be a JSON object {"id": int, "message": string}');
    }
    value = event.data.value;
  }
  if (value.id !== undefined && value.id !== null && !Number.isInteger(value.id)) {
    throw new BadRequest('got error while unmarshalling data: "id" must be an integer');
  }
  if (value.message !== undefined && value.message !== null && typeof value.message !== 'string') {
    throw new BadRequest('got error while unmarshalling data: "message" must be a string');
  }
  const data = { id: value.id == null ? 0 : value.id, message: (value.message == null ? '' : value.message) + config.message };
  const out = withJsonData(event, data);
  if (config.type) out.type = config.type;
  log(`${describe(event)} -> type=${out.type} message=${JSON.stringify(data.message)}`);
  sendEvent(res, out);
}

function eventDisplay(event, req, res) {
  let s = '☁️  cloudevents.Event\nContext Attributes,\n';
  s += `  specversion: ${event.specversion}\n`;
  s += `  type: ${event.type}\n`;
  s += `  source: ${event.source}\n`;
  if (event.subject !== undefined) s += `  subject: ${event.subject}\n`;
  s += `  id: ${event.id}\n`;
  if (event.time !== undefined) s += `  time: ${event.time}\n`;
  if (event.dataschema !== undefined) s += `  dataschema: ${event.dataschema}\n`;
  if (event.datacontenttype !== undefined) s += `  datacontenttype: ${event.datacontenttype}\n`;
  const names = Object.keys(event.extensions).sort();
  if (names.length > 0) {
    s += 'Extensions,\n';
    for (const name of names) s += `  ${name}: ${event.extensions[name]}\n`;
  }
  const d = event.data;
  if (d) {
    s += d.kind === 'binary' ? 'Data (binary),\n  ' : 'Data,\n  ';
    if (d.kind === 'json' && (!event.datacontenttype || isJsonType(event.datacontenttype))) {
      s += JSON.stringify(d.value, null, 2).replace(/\n/g, '\n  ');
    } else {
      s += dataBytes(event).toString('utf8');
    }
    s += '\n';
  }
  process.stdout.write(s);
  sendEmpty(res, 202);
}

function filter(event, req, res) {
  const keep = config.filter(eventObject(event), process.env);
  log(`${describe(event)} -> ${keep ? 'pass' : 'drop'}`);
  if (keep) sendEvent(res, event);
  else sendEmpty(res);
}

function transformer(event, req, res) {
  const value = config.transformer(eventObject(event), process.env);
  log(`${describe(event)} -> data=${JSON.stringify(value)}`);
  sendEvent(res, withJsonData(event, value));
}

function switcher(event, req, res) {
  const path = req.url.split('?')[0].replace(/\/+$/, '');
  const n = path === '' ? 0 : /^\/\d+$/.test(path) ? Number(path.slice(1)) : NaN;
  if (!Number.isSafeInteger(n)) throw new BadRequest(`path must be /<case number>, not '${req.url}'`);
  const value = config.expression(eventObject(event), process.env);
  const match = n < config.cases.length && value === config.cases[n];
  log(`${describe(event)} case ${n}: ${JSON.stringify(value)} ${match ? '===' : '!=='} ${JSON.stringify(config.cases[n])}`);
  if (match) sendEvent(res, event);
  else sendEmpty(res);
}

const HANDLERS = { appender, 'event-display': eventDisplay, filter, transformer, switcher };

// ---------------------------------------------------------------------------
// Server

function log(line) {
  process.stderr.write(`stand-in ${mode}: ${line}\n`);
}

const handler = HANDLERS[mode];

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) tooLarge = true;
    else chunks.push(chunk);
  });
  req.on('end', () => {
    if (req.url === '/healthz') return sendEmpty(res, 204);
    if (req.method !== 'POST') return sendError(res, 405, `method ${req.method} not allowed: POST a CloudEvent`, { allow: 'POST' });
    if (tooLarge) return sendError(res, 413, `body larger than ${MAX_BODY} bytes`);
    let event;
    try {
      event = decodeRequest(req, Buffer.concat(chunks));
    } catch (e) {
      log(`400: ${e.message}`);
      return sendError(res, 400, e.message);
    }
    try {
      handler(event, req, res);
    } catch (e) {
      if (e instanceof BadRequest) {
        log(`400: ${e.message}`);
        return sendError(res, 400, e.message);
      }
      log(`500: ${e && e.stack ? e.stack : e}`);
      if (!res.headersSent) sendError(res, 500, e && e.message !== undefined ? String(e.message) : String(e));
      else res.destroy();
    }
  });
  req.on('error', () => res.destroy());
});

// Keep idle connections open longer than a proxy's pool would (Node's default is 5 s).
server.keepAliveTimeout = 75 * 1000;
server.headersTimeout = 80 * 1000;

const port = Number(process.env.PORT || 8080);
server.on('error', (e) => die(`cannot listen on 127.0.0.1:${port}: ${e.message}`));
server.listen(port, '127.0.0.1', () => log(`listening on 127.0.0.1:${port}`));

function shutdown(signal) {
  log(`${signal}: closing`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // In-flight requests are quick; do not wait for a client that keeps a connection busy.
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
