#!/usr/bin/env node
'use strict';
/**
 * Relays one agent event to the daemon. Run by claude's hooks
 * (`node hook-relay.js <Event>`, the hook JSON on stdin) and by codex's
 * notify (`node hook-relay.js <event> '<json>'`, the JSON as the last
 * argument). POSTs `{event, sessionId, payload}` as JSON to $AGENTD_HOOK_URL
 * (loopback only) with the header `x-agentd-hook-secret: $AGENTD_HOOK_SECRET`.
 *
 * The daemon sets those variables (and AGENTD_SESSION_ID) in the agent's
 * environment; hooks inherit it. Plain JS without dependencies so it starts
 * in ~40 ms. It never writes to stdout (claude reads a hook's stdout as
 * instructions), always exits 0, and gives up after 2 s so it never holds
 * the agent up for long.
 */
const http = require('http');

/** Claude waits for some hooks (PermissionRequest, Stop) before it goes on: bound that wait. */
const DEADLINE_MS = 2000;
/** Claude's payloads carry tool input (a whole file for Write); beyond this, send the event without it. */
const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

const debug = process.env.AGENTD_HOOK_DEBUG === '1';
function done(why) {
  if (debug && why) process.stderr.write(`hook-relay: ${why}\n`);
  process.exit(0);
}

setTimeout(() => done('deadline'), DEADLINE_MS).unref();

function readStdin(callback) {
  if (process.stdin.isTTY) return callback('');
  const parts = [];
  let size = 0;
  process.stdin.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_PAYLOAD_BYTES) parts.push(chunk);
  });
  process.stdin.on('end', () => callback(size <= MAX_PAYLOAD_BYTES ? Buffer.concat(parts).toString('utf8') : null));
  process.stdin.on('error', () => callback(''));
}

function parse(text) {
  if (text === null) return { truncated: true };
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function send(event, payload) {
  let url;
  try {
    url = new URL(process.env.AGENTD_HOOK_URL || '');
  } catch {
    return done('no AGENTD_HOOK_URL');
  }
  // The secret must never leave the machine, whatever the environment says.
  if (url.protocol !== 'http:' || !LOOPBACK.has(url.hostname)) return done('AGENTD_HOOK_URL is not a loopback http URL');
  const sessionId = process.env.AGENTD_SESSION_ID || '';
  const body = Buffer.from(JSON.stringify({ event, sessionId, payload }));
  const req = http.request(url, {
    method: 'POST',
    agent: false,
    headers: {
      'content-type': 'application/json',
      'content-length': body.length,
      'x-agentd-hook-secret': process.env.AGENTD_HOOK_SECRET || '',
      'x-agentd-session-id': sessionId,
    },
  });
  req.on('response', (res) => {
    res.resume();
    done(res.statusCode >= 300 ? `daemon answered ${res.statusCode}` : '');
  });
  req.on('error', (err) => done(err.message));
  req.end(body);
}

const event = process.argv[2] || 'unknown';
if (process.argv.length > 3) send(event, parse(process.argv[process.argv.length - 1]));
else readStdin((text) => send(event, parse(text)));
