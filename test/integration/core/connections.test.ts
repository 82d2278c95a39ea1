import { connect, Socket } from 'node:net';
import { startDaemon, TEST_TOKEN, TestDaemon } from '../../helpers/app';
import { cleanupTmp } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { TestSocket } from '../../helpers/ws';
import { captureLogger } from '../../unit/health/fakes';

/** Connection limits: MAX_CONNECTIONS and the time request headers may take (catalogue B7, slow-loris). */

const MAX = 4;
const HEADERS_TIMEOUT_MS = 1_500;
let d: TestDaemon;
let port: number;
const log = captureLogger('info');
const idle: Socket[] = [];
let terminal: TestSocket | null = null;

beforeAll(async () => {
  // Node's default header timeout here: the idle sockets that fill the cap must outlive the test.
  d = await startDaemon({ maxConnections: MAX }, undefined, { logger: log.logger });
  port = Number(new URL(d.base).port);
});
afterEach(() => {
  for (const s of idle.splice(0)) s.destroy();
  terminal?.ws.terminate();
  terminal = null;
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

/** Waits until the server holds exactly `n` connections (closes on either side take a moment to arrive). */
async function settleAt(n: number): Promise<void> {
  const count = () => new Promise<number>((resolve, reject) => d.app.server.getConnections((err, c) => (err ? reject(err) : resolve(c))));
  await waitFor(async () => (await count()) === n || null, 5_000, `${n} open connections`);
}

/** A connection that sends nothing (or `first`), open once this resolves. */
function openIdle(first?: string, to = port): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(to, '127.0.0.1', () => {
      if (first) s.write(first);
      resolve(s);
    });
    s.on('error', reject);
    idle.push(s);
  });
}

/** One request on its own connection; the whole answer once the server closes it. */
function rawRequest(request: string): Promise<{ status: number; head: string; body: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    let out = '';
    const s = connect(port, '127.0.0.1', () => s.write(request));
    s.on('data', (b) => (out += b));
    s.on('error', reject);
    s.on('close', () => {
      const split = out.indexOf('\r\n\r\n');
      resolve({ status: Number(out.slice(9, 12)), head: out.slice(0, split), body: out.slice(split + 4), closedAfterMs: Date.now() - t0 });
    });
  });
}

const health = 'GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n';
/** A well-formed, authenticated chat-socket upgrade. */
const upgrade = `GET /api/claude/ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe('connection limits', () => {
  it('answers a connection past MAX_CONNECTIONS 503 unavailable with Retry-After, keeps the open ones working, and takes new ones once some close', async () => {
    // Connection: close, so no kept-alive request connection takes a place.
    const s = (await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: d.root }, { headers: { connection: 'close' } })).json.session;
    const term = (terminal = d.socket(`/api/sessions/${s.id}/ws`));
    await term.nextJson((f) => f.type === 'snapshot');
    await settleAt(1);
    while (idle.length < MAX - 1) await openIdle();
    expect(log.lines.some((l) => String(l.msg).startsWith('connection limit reached'))).toBe(false);

    for (const request of [health, upgrade]) {
      const refused = await rawRequest(request);
      expect(refused.status).toBe(503);
      expect(refused.head).toMatch(/\r\nRetry-After: 5(\r\n|$)/i);
      expect(JSON.parse(refused.body)).toEqual({ error: { code: 'unavailable', message: `the daemon has ${MAX} connections open (MAX_CONNECTIONS); try again later` } });
    }
    expect(log.lines.filter((l) => l.msg === 'connection limit reached: new connections are answered 503 until some close')).toHaveLength(1);
    // The open terminal still works.
    term.sendBytes('echo STILL-$((40+2))\r');
    await term.waitOutput('STILL-42', 5_000);
    // One closes: a new connection is served again.
    idle.pop()!.destroy();
    await waitFor(async () => ((await rawRequest(health)).status === 200) || null, 5_000, 'a connection under the cap again');
    expect(log.lines.some((l) => l.msg === 'connections below the limit again')).toBe(true);
    expect((await d.api('GET', '/api/sessions', undefined, { headers: { connection: 'close' } })).json.count).toBe(1);
  }, 20_000);

  it('closes a connection past the cap that asks nothing within a second, so a flood of idle sockets holds no descriptors', async () => {
    await settleAt(0);
    while (idle.length < MAX) await openIdle();
    const extra = await openIdle();
    const t0 = Date.now();
    await new Promise<void>((resolve) => extra.once('close', () => resolve()));
    expect(Date.now() - t0).toBeLessThan(2_500);
    // Nor one that trickles a byte now and then (an idle timeout would let it stay).
    const trickler = await openIdle('G');
    const bytes = 'ET /api/health HTTP/1.1\r\nHost: localhost\r\n';
    let sent = 0;
    const drip = setInterval(() => trickler.writable && trickler.write(bytes[sent++ % bytes.length]), 200);
    const t1 = Date.now();
    await new Promise<void>((resolve) => trickler.once('close', () => resolve()));
    clearInterval(drip);
    expect(Date.now() - t1).toBeLessThan(2_500);
  }, 10_000);

  it('answers 408 and closes a connection whose request headers do not arrive in time (slow-loris)', async () => {
    const slow = await startDaemon({}, undefined, { headersTimeoutMs: HEADERS_TIMEOUT_MS });
    const t0 = Date.now();
    const late = await openIdle('GET /api/health HTTP/1.1\r\nHost: localhost\r\n', Number(new URL(slow.base).port));
    let out = '';
    late.on('data', (b) => (out += b));
    await new Promise<void>((resolve) => late.once('close', () => resolve()));
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100);
    expect(elapsed).toBeLessThan(HEADERS_TIMEOUT_MS * 2 + 1_000);
    expect(Number(out.slice(9, 12))).toBe(408);
    expect(JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4))).toEqual({ error: { code: 'invalid_request', message: 'the request did not arrive in time (its headers within 1.5 s)' } });
    await slow.dispose();
  }, 10_000);
});
