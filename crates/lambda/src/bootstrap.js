// serval's runtime client for Node.js Lambda handlers: the standard library only.
// Loads _HANDLER ("file.function", file.js, .mjs or .cjs) from LAMBDA_TASK_ROOT, then pulls
// invocations from the Lambda Runtime API at AWS_LAMBDA_RUNTIME_API and answers each with the
// handler's result (JSON; an async handler's, or a callback's) or its error
// ({"errorType", "errorMessage", "trace"}).
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { pathToFileURL } = require('url');

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const HOST = API.slice(0, API.lastIndexOf(':'));
const PORT = Number(API.slice(API.lastIndexOf(':') + 1));
const BASE = '/2018-06-01/runtime';
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// One request to the Runtime API on a kept-alive connection.
function call(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const options = { host: HOST, port: PORT, method, path: BASE + urlPath, agent, headers: headers || {} };
    const request = http.request(options, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

function errorDocument(error) {
  const e = error instanceof Error ? error : new Error(String(error));
  return JSON.stringify({ errorType: e.name || 'Error', errorMessage: e.message, trace: String(e.stack || '').split('\n') });
}

async function loadHandler() {
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const handler = process.env._HANDLER || '';
  const dot = handler.lastIndexOf('.');
  const [file, name] = [handler.slice(0, dot), handler.slice(dot + 1)];
  const base = path.resolve(root, file);
  const found = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw Object.assign(new Error(`Cannot find module '${file}'`), { name: 'Runtime.ImportModuleError' });
  }
  const loaded = await import(pathToFileURL(found).href);
  const fn = loaded[name] || (loaded.default && loaded.default[name]);
  if (typeof fn !== 'function') {
    throw Object.assign(new Error(`${file}.${name} is undefined or not exported`), { name: 'Runtime.HandlerNotFound' });
  }
  return fn;
}

function context(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  return {
    awsRequestId: headers['lambda-runtime-aws-request-id'] || '',
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'] || '',
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME || '',
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST',
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '128',
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME || '',
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME || '',
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// The handler's result: what its promise resolves to, what it passes its callback, or
// (a handler of fewer than three parameters) what it returns.
function run(handler, event, ctx) {
  return new Promise((resolve, reject) => {
    const callback = (error, result) => (error ? reject(error) : resolve(result));
    try {
      const out = handler(event, ctx, callback);
      if (out && typeof out.then === 'function') {
        out.then(resolve, reject);
      } else if (handler.length < 3) {
        resolve(out);
      }
    } catch (error) {
      reject(error);
    }
  });
}

(async () => {
  let handler;
  try {
    handler = await loadHandler();
  } catch (error) {
    await call('POST', '/init/error', errorDocument(error), { 'Lambda-Runtime-Function-Error-Type': error.name || 'Runtime.ImportModuleError' });
    process.exit(1);
  }
  for (;;) {
    const next = await call('GET', '/invocation/next');
    if (next.status !== 200) {
      process.exit(1);
    }
    const id = next.headers['lambda-runtime-aws-request-id'];
    process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'] || '';
    const headers = { 'Content-Type': 'application/json' };
    let answer;
    try {
      const event = next.body.length ? JSON.parse(next.body) : null;
      const result = await run(handler, event, context(next.headers));
      answer = [`/invocation/${id}/response`, JSON.stringify(result === undefined ? null : result)];
    } catch (error) {
      console.error(error);
      headers['Lambda-Runtime-Function-Error-Type'] = 'Function.Unhandled';
      answer = [`/invocation/${id}/error`, errorDocument(error)];
    }
    await call('POST', answer[0], answer[1], headers);
  }
})();
