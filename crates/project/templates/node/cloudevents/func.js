'use strict';

/**
 * The function: serval calls handle() with every CloudEvent that arrives.
 *
 * @param {object} event  specversion, id, source, type, subject, time, datacontenttype,
 *   extension attributes, and data (parsed JSON when its content type is JSON, a string
 *   for text/*, else a Buffer)
 * @returns {Promise<object|undefined>} an event to answer with (a broker takes it as a
 *   new event; id and specversion are filled in when missing), or undefined for none
 */
async function handle(event) {
  if (event.type.endsWith('.reply')) return undefined; // never answer a reply: no event loops
  return {
    type: `${event.type}.reply`,
    source: '{{name}}',
    subject: event.id,
    datacontenttype: event.datacontenttype,
    data: event.data,
  };
}

module.exports = { handle };
