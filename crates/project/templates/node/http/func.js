'use strict';

/**
 * The function: serval calls handle() with every HTTP request.
 *
 * @param {object} request  method, path, query (each parameter's first value),
 *   headers (lower-case names), body (a Buffer)
 * @returns {Promise<{status?: number, headers?: object, body?: string|Buffer|object}>}
 *   a string body is sent as text/plain, a Buffer as is, anything else as JSON
 */
async function handle(request) {
  if (request.method === 'POST') {
    return { body: { received: request.body.toString() } };
  }
  const name = request.query.name || 'World';
  return { body: `Hello, ${name}!\n` };
}

module.exports = { handle };
