import { chmodSync, mkdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startDaemon, TestDaemon, TEST_TOKEN } from '../../helpers/app';
import { http } from '../../helpers/http';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { TestSocket } from '../../helpers/ws';

let d: TestDaemon;
let configDir: string;
beforeAll(async () => {
  configDir = tmpdir('cfg');
  const fakeAgent = join(configDir, 'fake-agent');
  writeFileSync(fakeAgent, '#!/bin/sh\necho "fake agent says $FAKE_GREETING"\nexec cat\n');
  chmodSync(fakeAgent, 0o755);
  d = await startDaemon({
    maxConcurrentSessions: 4,
    agents: {
      py: { command: 'python3', args: ['-i', '-q'], env: { PYTHONUNBUFFERED: '1' } },
      fake: { command: fakeAgent, env: { FAKE_GREETING: 'hello' } },
      ghost: { command: '/nonexistent/ghost-agent' },
      claude: { command: '/nonexistent/claude-override' },
    },
  });
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

/** Live sessions now, to check that a refused request created nothing. */
async function liveCount(): Promise<number> {
  return (await d.api('GET', '/api/sessions/active')).json.count;
}
async function totalCount(): Promise<number> {
  return (await d.api('GET', '/api/sessions')).json.count;
}
function expectError(res: { status: number; json: any }, status: number, code: string): void {
  expect(res.status).toBe(status);
  expect(res.json).toEqual({ error: { code, message: expect.any(String) } });
}

describe('REST', () => {
  it('answers health without a token', async () => {
    const res = await http(d.base, 'GET', '/api/health');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 'ok', version: expect.any(String), uptimeSeconds: expect.any(Number), sessions: { active: expect.any(Number), total: expect.any(Number) }, connections: expect.any(Number) });
    expect(res.json.agents.shell.available).toBe(true);
    expect(Object.keys(res.json.agents)).toEqual(expect.arrayContaining(['claude', 'codex', 'shell']));
    // Configured profiles are listed too, available or not.
    expect(res.json.agents).toMatchObject({ py: { available: true }, fake: { available: true }, ghost: { available: false } });
  });

  it('creates, lists, shows, writes to and closes a session, keeping its history', async () => {
    const s = await d.create({ agent: 'shell' });
    expect(s).toMatchObject({ agent: 'shell', projectPath: d.root, state: 'running', clients: 0, cols: 120, rows: 40, exitCode: null, endReason: null });
    for (const k of ['createdAt', 'lastActivityAt', 'expiresAt']) expect(new Date(s[k]).toISOString()).toBe(s[k]);
    const list = await d.api('GET', '/api/sessions');
    expect(list.json.sessions.map((x: any) => x.id)).toContain(s.id);
    const one = await d.api('GET', `/api/sessions/${s.id}`);
    expect(one.json.session.id).toBe(s.id);
    const input = await d.api('POST', `/api/sessions/${s.id}/input`, { data: 'echo written-by-rest-$((40+2))\r' });
    expect(input.status).toBe(202);
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}/history?format=text`)).text.includes('written-by-rest-42'));
    const ansi = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
    expect(ansi.text).toContain('written-by-rest-42');
    const closed = await d.api('DELETE', `/api/sessions/${s.id}`);
    expect(closed.status).toBe(200);
    expect(closed.json.session.state).toBe('closed');
    expect(closed.json.session.pid).toBeNull();
    const after = await d.api('GET', `/api/sessions/${s.id}/history?format=text`);
    expect(after.text).toContain('written-by-rest-42');
    expect((await d.api('GET', `/api/sessions/${s.id}`)).json.session.state).toBe('closed');
  });

  it('lists live sessions with tree figures and slots in /api/sessions/active', async () => {
    const s = await d.create({ agent: 'shell' });
    const res = await d.api('GET', '/api/sessions/active');
    expect(res.status).toBe(200);
    const mine = res.json.sessions.find((x: any) => x.id === s.id);
    expect(mine).toMatchObject({ pid: s.pid, outputBytes: expect.any(Number), agentSessionId: null });
    expect(mine).toHaveProperty('memoryMB');
    expect(mine).toHaveProperty('cpuPercent');
    expect(res.json.slots).toEqual({ used: res.json.count, max: 4 });
    expect(res.json.memory).toEqual({ usedMB: expect.any(Number), maxMB: 2048 });
    await d.api('DELETE', `/api/sessions/${s.id}`);
  });

  it('starts a configured profile with its env, and a client-chosen id', async () => {
    const s = await d.create({ agent: 'fake', sessionId: 'my-chat.1:a' });
    expect(s.id).toBe('my-chat.1:a');
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}/history`)).text.includes('fake agent says hello'));
    const dup = await d.api('POST', '/api/sessions', { agent: 'shell', sessionId: 'my-chat.1:a', projectPath: d.root });
    expectError(dup, 409, 'conflict');
    await d.api('DELETE', `/api/sessions/${s.id}`);
  });

  it('answers the compatibility routes like the main ones', async () => {
    const a = await d.create({ agent: 'shell' });
    const status = await d.api('GET', `/api/sessions/interactive/${a.id}/status`);
    expect(status.json.session.id).toBe(a.id);
    expect((await d.api('DELETE', `/api/sessions/interactive/${a.id}`)).json.session.state).toBe('closed');
    const b = await d.create({ agent: 'shell' });
    expect((await d.api('DELETE', `/api/claude/session/${b.id}/close`)).json.session.state).toBe('closed');
    const c = await d.create({ agent: 'shell' });
    expect((await d.api('DELETE', `/api/codex/session/${c.id}/close`)).json.session.state).toBe('closed');
  });

  it('refuses a missing agent binary with 400 agent_unavailable and human words', async () => {
    const before = await totalCount();
    const res = await d.api('POST', '/api/sessions', { agent: 'ghost', projectPath: d.root });
    expectError(res, 400, 'agent_unavailable');
    expect(res.json.error.message).toMatch(/ghost-agent is not installed/);
    // A configured profile named like a built-in overrides its command.
    const claude = await d.api('POST', '/api/sessions', { agent: 'claude', projectPath: d.root });
    expectError(claude, 400, 'agent_unavailable');
    expect(await totalCount()).toBe(before);
  });
});

describe('bad input gets the exact error and creates nothing', () => {
  it('rejects a missing or wrong token with 401 on every route', async () => {
    const before = await totalCount();
    const routes: Array<[string, string]> = [
      ['GET', '/api/sessions'], ['POST', '/api/sessions'], ['GET', '/api/sessions/active'], ['GET', '/api/sessions/x'],
      ['DELETE', '/api/sessions/x'], ['GET', '/api/sessions/x/history'], ['POST', '/api/sessions/x/input'],
      ['POST', '/api/sessions/keep-alive'], ['POST', '/api/chat'], ['POST', '/api/sessions/x/revive'],
      ['GET', '/api/sessions/x/messages'], ['POST', '/api/sessions/x/answer'], ['DELETE', '/api/claude/session/x/close'],
    ];
    for (const [method, path] of routes) {
      for (const token of [null, 'wrong', TEST_TOKEN.slice(0, -1), TEST_TOKEN + 'x', 'é'.repeat(40)]) {
        const res = await http(d.base, method, path, { token, body: { agent: 'shell', projectPath: d.root } });
        expectError(res, 401, 'unauthorized');
      }
    }
    expect(await totalCount()).toBe(before);
  });

  it('rejects a foreign Host with 403', async () => {
    const res = await http(d.base, 'GET', '/api/sessions', { token: TEST_TOKEN, headers: { host: 'evil.example:3000' } });
    expectError(res, 403, 'forbidden');
    const health = await http(d.base, 'GET', '/api/health', { headers: { host: 'attacker.test' } });
    expectError(health, 403, 'forbidden');
  });

  it('rejects a body that is not JSON with 415, malformed JSON with 400, over 1 MiB with 413', async () => {
    const before = await totalCount();
    expectError(await d.api('POST', '/api/sessions', undefined, { rawBody: 'agent=shell', contentType: 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
    expectError(await d.api('POST', '/api/sessions', undefined, { rawBody: '{"agent":"shell"}', contentType: 'text/plain' }), 415, 'unsupported_media_type');
    expectError(await d.api('POST', '/api/sessions', undefined, { rawBody: '{"agent":' }), 400, 'invalid_request');
    expectError(await d.api('POST', '/api/sessions', undefined, { rawBody: '[1,2]' }), 400, 'invalid_request');
    const big = JSON.stringify({ agent: 'shell', pad: 'x'.repeat(1024 * 1024) });
    expectError(await d.api('POST', '/api/sessions', undefined, { rawBody: big }), 413, 'payload_too_large');
    expect(await totalCount()).toBe(before);
  });

  it('rejects an unknown agent with 400 invalid_request', async () => {
    const before = await totalCount();
    expectError(await d.api('POST', '/api/sessions', { agent: 'rm -rf /', projectPath: d.root }), 400, 'invalid_request');
    const missing = await d.api('POST', '/api/sessions', { projectPath: d.root });
    expectError(missing, 400, 'invalid_request');
    expect(missing.json.error.message).toMatch(/^agent is required; known agents: shell, claude, codex/);
    expect(await totalCount()).toBe(before);
  });

  it('rejects a path outside the roots, a symlink out of them, a missing folder and a file', async () => {
    const before = await totalCount();
    const outside = tmpdir('outside');
    const link = join(d.root, 'escape');
    symlinkSync(outside, link);
    const file = join(d.root, 'a-file');
    writeFileSync(file, 'x');
    mkdirSync(join(d.root, 'inner'));
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: outside }), 400, 'path_not_allowed');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: `${d.root}/../` }), 400, 'path_not_allowed');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: link }), 400, 'path_not_allowed');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: 'relative/path' }), 400, 'path_not_allowed');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: join(d.root, 'missing') }), 400, 'invalid_request');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: file }), 400, 'invalid_request');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: `${d.root}/x\u0000y` }), 400, 'invalid_request');
    expect(await totalCount()).toBe(before);
    const ok = await d.create({ agent: 'shell', projectPath: join(d.root, 'inner') });
    expect(ok.projectPath).toBe(join(d.root, 'inner'));
    await d.api('DELETE', `/api/sessions/${ok.id}`);
  });

  it('answers a missing folder outside the roots as outside (path_not_allowed), not as missing: nothing to learn about what exists there', async () => {
    const outside = tmpdir('outside-missing');
    for (const missing of [join(outside, 'nope'), '/nonexistent-agentd-probe', `${d.root}/../nonexistent-agentd-probe`, join(d.root, 'escape-missing', 'deeper')]) {
      if (missing.includes('escape-missing')) symlinkSync(outside, join(d.root, 'escape-missing'));
      expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: missing }), 400, 'path_not_allowed');
    }
    // Inside the roots a missing folder is still said to be missing.
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: join(d.root, 'not-yet', 'deeper') }), 400, 'invalid_request');
  });

  it('checks the folder again on revival: a folder gone, or swapped for a link out of the roots, is refused and nothing starts', async () => {
    const outside = tmpdir('revive-outside');
    const folder = join(d.root, 'swapped');
    mkdirSync(folder);
    const s = await d.create({ agent: 'shell', projectPath: folder });
    await d.api('DELETE', `/api/sessions/${s.id}`);
    rmdirSync(folder);
    expectError(await d.api('POST', `/api/sessions/${s.id}/revive`), 400, 'invalid_request');
    symlinkSync(outside, folder);
    expectError(await d.api('POST', `/api/sessions/${s.id}/revive`), 400, 'path_not_allowed');
    const after = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect(after.state).toBe('closed');
    expect(after.pid).toBeNull();
  });

  /** Sends `request` as it is on a fresh connection; resolves with the status line's code, the headers and the body. */
  function raw(request: string): Promise<{ status: number; head: string; body: string }> {
    const port = Number(new URL(d.base).port);
    return new Promise((resolve, reject) => {
      let out = '';
      const s = connect(port, '127.0.0.1', () => s.write(request));
      s.on('data', (b) => (out += b));
      s.on('error', reject);
      s.on('close', () => {
        const body = out.slice(out.indexOf('\r\n\r\n') + 4);
        resolve({ status: Number(out.slice(9, 12)), head: out.slice(0, out.indexOf('\r\n\r\n')), body: /^[0-9a-f]+\r\n/.test(body) ? body.split('\r\n')[1] : body });
      });
    });
  }

  it('answers what Node\'s parser or a URL cannot take in the contract\'s error shape, not as plain text or HTML', async () => {
    const cases: Array<[string, number, string]> = [
      ['GET http://[/api/sessions HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, 'malformed request target'],
      ['GET http://[/api/sessions/w1/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', 400, 'malformed request target'],
      ['GARBAGE\r\n\r\n', 400, 'malformed HTTP request'],
      [`GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`, 431, 'request headers are too large'],
      [`GET /api/claude/ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n`, 400, 'missing or invalid Sec-WebSocket-Key'],
      [`POST /api/claude/ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`, 400, 'a WebSocket upgrade must be a GET'],
    ];
    for (const [request, status, message] of cases) {
      const reply = await raw(request);
      expect({ status: reply.status, body: JSON.parse(reply.body) }).toEqual({ status, body: { error: { code: 'invalid_request', message } } });
      // The headers of every answer, though express never saw these.
      expect(reply.head).toMatch(/\r\nCache-Control: no-store\r\n/i);
      expect(reply.head).toMatch(/\r\nReferrer-Policy: no-referrer(\r\n|$)/i);
    }
    expect((await d.api('GET', '/api/sessions')).status).toBe(200);
  });

  it('serves a request that asks to upgrade to something else than WebSocket (curl --http2: h2c) as the plain request it is', async () => {
    const reply = await raw(`GET /api/sessions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`);
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body)).toHaveProperty('sessions');
    // The same checks apply: no token, no answer.
    expect((await raw('GET /api/sessions HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n')).status).toBe(401);
  });

  it('answers 400 for a malformed session id and 404 for an unknown one', async () => {
    for (const bad of ['a%20b', 'x'.repeat(129), '%27%20OR%201%3D1', 'a%00b', '%E2%98%83']) {
      expectError(await d.api('GET', `/api/sessions/${bad}`), 400, 'invalid_request');
      expectError(await d.api('DELETE', `/api/sessions/${bad}`), 400, 'invalid_request');
    }
    expectError(await d.api('GET', '/api/sessions/no-such-session'), 404, 'not_found');
    expectError(await d.api('DELETE', '/api/sessions/no-such-session'), 404, 'not_found');
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', sessionId: 'bad id!', projectPath: d.root }), 400, 'invalid_request');
    // A body names the rule (API.md); a path says "malformed session id".
    const rule = 'sessionId must match ^[A-Za-z0-9._:-]{1,128}$';
    const before = (await d.api('GET', '/api/sessions')).json.sessions.length;
    for (const [path, body] of [
      ['/api/sessions', { agent: 'shell', sessionId: 'bad id!', projectPath: d.root }],
      ['/api/chat', { sessionId: 'bad id!', message: 'hi', agent: 'shell', projectPath: d.root }],
      ['/api/sessions/keep-alive', { sessionId: 'bad id!' }],
      ['/api/sessions/keep-alive', { sessionId: 42 }],
    ] as const) {
      expect((await d.api('POST', path, body)).json.error).toEqual({ code: 'invalid_request', message: rule });
    }
    expect((await d.api('POST', '/api/sessions/keep-alive', {})).json.error).toEqual({ code: 'invalid_request', message: 'sessionId is required' });
    expect((await d.api('GET', '/api/sessions/a%20b')).json.error.message).toBe('malformed session id');
    expect((await d.api('GET', '/api/sessions')).json.sessions.length).toBe(before);
  });

  it('refuses a session past MAX_CONCURRENT_SESSIONS with 429 session_limit', async () => {
    const opened = [];
    while ((await liveCount()) < 4) opened.push(await d.create({ agent: 'shell' }));
    const before = await totalCount();
    expectError(await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: d.root }), 429, 'session_limit');
    expect(await totalCount()).toBe(before);
    for (const s of opened) await d.api('DELETE', `/api/sessions/${s.id}`);
  });

  it('refuses WebSocket upgrades with a wrong token (401), a foreign Origin (403), a foreign Host (403), a bad since (400), unknown or malformed ids', async () => {
    const s = await d.create({ agent: 'shell' });
    const path = `/api/sessions/${s.id}/ws`;
    const cases: Array<[TestSocket, number]> = [
      [d.socket(path, { token: 'wrong-token-wrong-token' }), 401],
      [d.socket(path, { token: TEST_TOKEN, origin: 'https://evil.example' }), 403],
      [d.socket(path, { token: TEST_TOKEN, origin: 'null' }), 403],
      [d.socket(path, { token: TEST_TOKEN, origin: 'http://localhost:1' }), 403],
      [d.socket(path, { token: TEST_TOKEN, headers: { host: 'evil.example' } }), 403],
      [d.socket(`${path}?since=-1`, { token: TEST_TOKEN }), 400],
      [d.socket(`${path}?since=abc`, { token: TEST_TOKEN }), 400],
      [d.socket('/api/sessions/no-such/ws', { token: TEST_TOKEN }), 404],
      [d.socket('/api/sessions/bad%20id/ws', { token: TEST_TOKEN }), 400],
    ];
    for (const [sock, status] of cases) {
      await waitFor(() => sock.unexpected, 5000, `refusal ${status}`);
      expect(sock.unexpected!.status).toBe(status);
      expect(JSON.parse(sock.unexpected!.body).error.code).toEqual(expect.any(String));
      expect(sock.opened).toBe(false);
    }
    const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect(session.state).toBe('running');
    expect(session.clients).toBe(0);
    await d.api('DELETE', `/api/sessions/${s.id}`);
  });

  it('accepts the daemon\'s own Origin and browser auth by first frame; closes 4401 without one', async () => {
    const s = await d.create({ agent: 'shell' });
    const path = `/api/sessions/${s.id}/ws`;
    const port = new URL(d.base).port;
    const browser = d.socket(path, { origin: `http://127.0.0.1:${port}` });
    await browser.waitOpen();
    browser.send({ type: 'auth', token: TEST_TOKEN });
    await browser.nextJson((f) => f.type === 'attached');
    const wrong = d.socket(path, {});
    await wrong.waitOpen();
    wrong.send({ type: 'auth', token: 'nope' });
    expect(await wrong.waitClose()).toBe(4401);
    expect(wrong.frames).toHaveLength(0);
    await d.api('DELETE', `/api/sessions/${s.id}`);
  });
});
