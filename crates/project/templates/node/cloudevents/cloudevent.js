'use strict';
// CloudEvents 1.0 over HTTP: binary and structured content mode in, binary mode out.
//
// An event is a plain object: specversion, id, source, type, and optionally
// datacontenttype, dataschema, subject, time, extension attributes (lower-case names,
// string values) and data (parsed JSON when its content type is JSON, a string for
// text/*, else a Buffer).

const { randomUUID } = require('node:crypto');

const REQUIRED = ['specversion', 'id', 'source', 'type'];

class InvalidEvent extends Error {}

function isJson(contentType) {
  const media = (contentType || 'application/json').split(';')[0].trim().toLowerCase();
  return media === 'application/json' || media === 'text/json' || media.endsWith('+json');
}

function decodeData(body, contentType) {
  if (isJson(contentType)) {
    try {
      return JSON.parse(body.toString());
    } catch (err) {
      throw new InvalidEvent(`the data is not the JSON its content type says: ${err.message}`);
    }
  }
  if ((contentType || '').toLowerCase().startsWith('text/')) return body.toString();
  return body;
}

function check(event) {
  const missing = REQUIRED.filter((name) => !event[name]);
  if (missing.length > 0) throw new InvalidEvent(`not a CloudEvent: missing ${missing.join(', ')}`);
  if (event.specversion !== '1.0') {
    throw new InvalidEvent(`specversion ${JSON.stringify(event.specversion)} is not supported (1.0 is)`);
  }
  return event;
}

/** A ce-* header value decoded; one that is not valid percent-encoding is taken as it is. */
function percentDecoded(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The event of a request; `headers` has lower-case names (as Node gives them). */
function fromHttp(headers, body) {
  const contentType = headers['content-type'] || '';
  const media = contentType.split(';')[0].trim().toLowerCase();
  if (media === 'application/cloudevents-batch+json') {
    throw new InvalidEvent('batched content mode is not supported: send one event per request');
  }
  if (media.startsWith('application/cloudevents')) {
    let document;
    try {
      document = JSON.parse(body.toString());
    } catch (err) {
      throw new InvalidEvent(`the body is not JSON: ${err.message}`);
    }
    if (document === null || typeof document !== 'object' || Array.isArray(document)) {
      throw new InvalidEvent('a structured event is a JSON object');
    }
    const { data_base64: base64, ...event } = document;
    if (base64 !== undefined) event.data = Buffer.from(base64, 'base64');
    return check(event);
  }
  const event = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith('ce-')) event[name.slice(3)] = percentDecoded(value);
  }
  if (contentType) event.datacontenttype = contentType;
  check(event); // before the data: a request that is no event is told so
  if (body.length > 0) event.data = decodeData(body, event.datacontenttype);
  return event;
}

/** A ce-* header value: space, '"', '%' and what is not printable ASCII percent-encoded. */
function headerValue(value) {
  return [...String(value)]
    .map((c) => (c > ' ' && c <= '~' && c !== '"' && c !== '%' ? c : encodeURIComponent(c)))
    .join('');
}

/** `event` in binary mode: {headers, body}; a missing id and specversion are filled in. */
function toHttp(event) {
  const { data, datacontenttype, ...attributes } = { specversion: '1.0', id: randomUUID(), ...event };
  const headers = {};
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) headers[`ce-${name}`] = headerValue(value);
  }
  let body = Buffer.alloc(0);
  let type = datacontenttype;
  if (data === undefined || data === null) {
    // no data
  } else if (Buffer.isBuffer(data) || data instanceof Uint8Array) {
    [body, type] = [Buffer.from(data), type || 'application/octet-stream'];
  } else if (typeof data === 'string' && !(type && isJson(type))) {
    [body, type] = [Buffer.from(data), type || 'text/plain; charset=utf-8'];
  } else {
    [body, type] = [Buffer.from(JSON.stringify(data)), type || 'application/json'];
  }
  if (body.length > 0) headers['content-type'] = type;
  return { headers, body };
}

module.exports = { InvalidEvent, fromHttp, toHttp };
