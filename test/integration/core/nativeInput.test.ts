import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeHelper } from '../../../server/common/native';
import { startDaemon, TEST_TOKEN, TestDaemon } from '../../helpers/app';
import { openFds } from '../../helpers/fds';
import { TestSocket } from '../../helpers/ws';
import { waitFor } from '../../helpers/wait';

/**
 * The native input path (server/pty/FastInput.ts, native/helper.c in*): the
 * keystrokes of the client that typed last go from its socket to the
 * terminal before JavaScript runs. Everything else the socket carries still
 * reaches `ws` whole and in order; input the program does not take waits in
 * the session's writer, in order; another client's size governs before that
 * client's keystrokes; nothing is left open.
 */

const KEYS = join(__dirname, '../../fixtures/keys.py');
const dir = mkdtempSync(join(tmpdir(), 'agentd-native-input-'));
/** keys.py in a raw terminal (no byte is taken as a signal, flow control or a literal-next). */
const keys = (...args: string[]) => ({ command: 'bash', args: ['--norc', '--noprofile', '-c', 'stty raw -echo -iexten; exec python3 "$0" "$@"', KEYS, ...args] });
const RECORDED = join(dir, 'recorded');
const RECORDED_LATE = join(dir, 'recorded-late');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** This process's descriptors of terminals (masters and slaves). */
const terminals = () => openFds().filter((f) => f === '/dev/ptmx' || f.startsWith('/dev/pts/')).length;

interface NativeView {
  nativeInputOn: boolean;
  nativeStats: { runs: number; rests: number };
  tellInput(): void;
}
/** Each client of a session as the native input path sees it, in attach order (diagnostics for tests). */
function clients(d: TestDaemon, id: string): NativeView[] {
  const session = d.app.pool.get(id) as unknown as { stream: { clients: { all(): Array<{ client: NativeView }> } } };
  return session.stream.clients.all().map((a) => a.client);
}
/** The native input path's counts for each client of a session, told up to now. */
function stats(d: TestDaemon, id: string): Array<{ runs: number; rests: number }> {
  return clients(d, id).map((c) => {
    c.tellInput();
    return c.nativeStats;
  });
}

/** Attaches (with a size, if given) once the program is ready (it prints R). */
async function attach(d: TestDaemon, id: string, size = '', zeroMask = false): Promise<TestSocket> {
  const s = d.socket(`/api/sessions/${id}/ws${size}`, { token: TEST_TOKEN, zeroMask });
  await s.nextJson((f) => f.type === 'snapshot');
  await waitFor(() => s.output.includes('R') || s.json().some((f) => f.type === 'snapshot' && String(f.data).includes('R')), 10_000, 'the program to start');
  return s;
}

/** Sends single keystrokes, each in a read of its own, until the client is on the native path; returns what it sent. */
async function typeUntilNative(d: TestDaemon, id: string, c: TestSocket, which = 0, key = 'k'): Promise<string> {
  let sent = '';
  await waitFor(async () => {
    c.ws.send(Buffer.from(key));
    sent += key;
    await sleep(5);
    return stats(d, id)[which].runs > 0 && clients(d, id)[which].nativeInputOn;
  }, 10_000, 'the client to type on the native path');
  return sent;
}

describe('the native input path', () => {
  let d: TestDaemon;
  beforeEach(async () => {
    d = await startDaemon({ agents: { record: keys('record', RECORDED, '0'), late: keys('record', RECORDED_LATE, '1.5'), size: keys('size'), brief: keys('brief', '200') } });
  });
  afterEach(async () => {
    await d.dispose();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is built (npm install builds native/helper.c)', () => {
    expect(typeof nativeHelper()?.inOpen).toBe('function');
  });

  it('writes every keystroke once and in order, with text, control, fragmented, empty and 64-bit-length frames between', async () => {
    const session = await d.create({ agent: 'record' });
    const c = await attach(d, session.id);
    let want = await typeUntilNative(d, session.id, c);
    const armed = stats(d, session.id)[0].runs;
    const key = (s: string) => {
      c.ws.send(Buffer.from(s));
      want += s;
    };
    for (let i = 0; i < 400; i++) {
      // Some keystrokes in reads of their own (the native reader takes them), the rest of the frames together (where
      // the reader meets one not of its kind, it leaves it, and all after it, to ws).
      if (i % 2 === 0) {
        await sleep(1);
        key(`n${i};`);
      }
      switch (i % 8) {
        case 0:
          key(`b${i};` + 'x'.repeat(i));
          break;
        case 1:
          c.send({ type: 'input', data: `t${i};` });
          want += `t${i};`;
          break;
        case 2:
          c.ws.ping();
          key(`p${i};`);
          break;
        case 3:
          // One message in two frames (the second a continuation): ws puts it together.
          c.ws.send(Buffer.from(`f${i}a`), { binary: true, fin: false });
          c.ws.send(Buffer.from(`f${i}b;`), { binary: true, fin: true });
          want += `f${i}af${i}b;`;
          break;
        case 4:
          key('m'.repeat(126 + i) + ';'); // a 16-bit length
          break;
        case 5:
          c.send({ type: 'resize', cols: 90 + (i % 10), rows: 30 });
          key(`r${i};`);
          break;
        case 6:
          key('');
          break;
        case 7:
          key(`big${i};` + 'y'.repeat(70_000)); // a 64-bit length: left to ws
          break;
      }
    }
    key('<<END>>');
    await c.waitOutput('done', 30_000);
    expect(readFileSync(RECORDED, 'latin1')).toBe(want);
    expect(c.closeCode).toBeNull();
    // The reader took keystrokes during the mix too (how many depends on how the frames fell into reads).
    expect(stats(d, session.id)[0].runs).toBeGreaterThan(armed);
  }, 60_000);

  it('leaves what a program that is not reading did not take to the session\'s writer, and writes nothing ahead of it', async () => {
    const session = await d.create({ agent: 'late' });
    const c = await attach(d, session.id);
    let want = await typeUntilNative(d, session.id, c);
    // Far more than the terminal holds (~64 KiB) while the program sleeps: the native write is cut short, the rest
    // waits in the writer, and later frames go behind it.
    for (let i = 0; i < 300; i++) {
      const s = `${String(i).padStart(4, '0')}:` + 'z'.repeat(995);
      c.ws.send(Buffer.from(s));
      want += s;
      if (i % 20 === 0) await sleep(1);
    }
    // Keystrokes go on while the program wakes and the writer drains what waits: none may overtake it.
    const until = Date.now() + 2_500;
    for (let i = 0; Date.now() < until; i++) {
      const s = `s${i};`;
      c.ws.send(Buffer.from(s));
      want += s;
      await sleep(1);
    }
    c.ws.send(Buffer.from('<<END>>'));
    want += '<<END>>';
    await c.waitOutput('done', 30_000);
    expect(readFileSync(RECORDED_LATE, 'latin1')).toBe(want);
    expect(stats(d, session.id)[0].rests).toBeGreaterThan(0);
  }, 60_000);

  it('goes back to ws when another client types, so that the typist\'s size is applied before its keystroke', async () => {
    const session = await d.create({ agent: 'size' });
    const a = await attach(d, session.id, '?cols=100&rows=30');
    const b = await attach(d, session.id, '?cols=80&rows=30');
    await typeUntilNative(d, session.id, a, 0, 'a');
    await a.waitOutput('a=100\n');
    b.ws.send(Buffer.from('b'));
    await a.waitOutput('b=80\n');
    expect(clients(d, session.id)[0].nativeInputOn).toBe(false);
    const before = stats(d, session.id)[0].runs;
    a.ws.send(Buffer.from('A'));
    await a.waitOutput('A=');
    // A's keystroke went through ws (which applied its size first), not natively ahead of the resize.
    expect(a.output.toString()).toMatch(/A=100\n$/);
    expect(stats(d, session.id)[0].runs).toBe(before);
    // ...and the next ones go natively again.
    await typeUntilNative(d, session.id, a, 0, 'a');
    expect(a.output.toString()).not.toMatch(/a=80/i);
  }, 30_000);

  it('never takes frames out of one that ws is still reading (a payload of frame-like bytes, arriving in parts)', async () => {
    const session = await d.create({ agent: 'record' });
    const c = await attach(d, session.id, '', true); // unmasked payloads: on the wire, they look like frames
    let want = await typeUntilNative(d, session.id, c);
    // A masked binary frame (a zero mask) of one byte, "a", as a client would send it.
    const fake = Buffer.from([0x82, 0x81, 0, 0, 0, 0, 0x61]);
    for (let pad = 0; pad < 7; pad++) {
      // Bigger than a loopback segment: the frame arrives in parts, and whichever part comes alone looks like frames.
      const payload = Buffer.concat([Buffer.alloc(pad, 0x70), ...new Array(12_000).fill(fake)]);
      c.ws.send(payload);
      want += payload.toString('latin1');
      await sleep(20);
      want += await typeUntilNative(d, session.id, c);
    }
    c.ws.send(Buffer.from('<<END>>'));
    await c.waitOutput('done', 20_000);
    expect(readFileSync(RECORDED, 'latin1') === want + '<<END>>').toBe(true);
  }, 60_000);

  it('leaves a frame over the size limit to ws: 1009, nothing of it written, the session unharmed', async () => {
    const session = await d.create({ agent: 'record' });
    const c = await attach(d, session.id);
    const sent = await typeUntilNative(d, session.id, c);
    c.ws.send(Buffer.alloc(2 * 1024 * 1024, 0x71));
    expect(await c.waitClose()).toBe(1009);
    await sleep(200);
    expect(readFileSync(RECORDED, 'latin1')).toBe(sent);
    expect((await d.api('GET', `/api/sessions/${session.id}`)).json.session.state).toBe('running');
  }, 30_000);

  it('lets go of the socket when the server ends the connection, by close or terminate', async () => {
    const session = await d.create({ agent: 'record' });
    const wsOf = (i: number) => (d.app.pool.get(session.id) as unknown as { stream: { clients: { all(): Array<{ client: { ws: { close(c: number, r: string): void; terminate(): void } } }> } } }).stream.clients.all()[i].client.ws;
    const a = await attach(d, session.id);
    let typed = await typeUntilNative(d, session.id, a);
    // The close handshake: the client's answer reaches ws (the native reader leaves it on the socket).
    wsOf(0).close(4000, 'bye');
    expect(await a.waitClose(5_000)).toBe(4000);
    const b = await attach(d, session.id);
    typed += await typeUntilNative(d, session.id, b, 0);
    await waitFor(() => readFileSync(RECORDED, 'latin1') === typed, 5_000, 'the keystrokes to be recorded');
    // A terminate: the connection really ends (no duplicate of the socket holds it open), and a keystroke already on
    // its way is dropped, as ws drops it (the reader stops at once, not at the socket's 'close' event).
    b.ws.send(Buffer.from('AFTER'));
    wsOf(0).terminate();
    expect(await b.waitClose(5_000)).toBe(1006);
    await sleep(100);
    expect(readFileSync(RECORDED, 'latin1')).toBe(typed);
  }, 30_000);

  it('leaves no descriptor behind when a session ends with a client on the native path', async () => {
    const run = async () => {
      const session = await d.create({ agent: 'record' });
      const c = await attach(d, session.id);
      await typeUntilNative(d, session.id, c);
      await d.api('DELETE', `/api/sessions/${session.id}`);
      await c.nextJson((f) => f.type === 'exit', 10_000);
      // Still attached: the native reader has let go of the terminal all the same.
      await waitFor(() => terminals() === 0, 5_000, `the terminal's descriptors to be closed (${openFds().join(' ')})`);
      c.ws.close();
      await c.waitClose();
    };
    await run(); // starts the daemon's threads, which keep descriptors of their own
    await sleep(300);
    const before = openFds().length;
    await run();
    await waitFor(() => openFds().length <= before, 5_000, `the descriptors to be closed (${before} before, now ${openFds().join(' ')})`);
  }, 30_000);

  it('lets go of the terminal when the program exits while the client types (its reader had stopped by itself)', async () => {
    const session = await d.create({ agent: 'brief' });
    const c = await attach(d, session.id);
    await typeUntilNative(d, session.id, c);
    // Keystrokes go on as the program exits: a write fails or a rest goes to the writer, and the reader stops.
    const typing = setInterval(() => c.ws.send(Buffer.from('k')), 1);
    try {
      await c.nextJson((f) => f.type === 'exit', 10_000);
    } finally {
      clearInterval(typing);
    }
    await waitFor(() => terminals() === 0, 5_000, `the terminal's descriptors to be closed (${openFds().join(' ')})`);
    expect(c.closeCode).toBeNull(); // still attached
  }, 30_000);

  it('can be turned off (AGENTD_NATIVE_INPUT=off): ws reads every frame, the bytes are the same', async () => {
    process.env.AGENTD_NATIVE_INPUT = 'off';
    try {
      const session = await d.create({ agent: 'record' });
      const c = await attach(d, session.id);
      let want = '';
      for (let i = 0; i < 50; i++) {
        c.ws.send(Buffer.from(`k${i};`));
        want += `k${i};`;
        await sleep(2);
      }
      c.ws.send(Buffer.from('<<END>>'));
      await c.waitOutput('done', 10_000);
      expect(readFileSync(RECORDED, 'latin1')).toBe(want + '<<END>>');
      expect(stats(d, session.id)[0].runs).toBe(0);
    } finally {
      delete process.env.AGENTD_NATIVE_INPUT;
    }
  }, 30_000);
});
