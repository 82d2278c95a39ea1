import { join } from 'node:path';
import { nativeHelper } from '../../../server/common/native';
import { binaryFrame, frameLength } from '../../../server/pty/FastOutput';
import { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { WsClient } from '../../../server/http/ws/terminal';
import { startDaemon, TestDaemon } from '../../helpers/app';
import { openFds } from '../../helpers/fds';
import { TestSocket } from '../../helpers/ws';
import { waitFor } from '../../helpers/wait';

/**
 * The native output path (server/pty/FastOutput.ts, native/helper.c): the
 * terminal's chunks go to caught-up clients' sockets as frames before
 * JavaScript sees them. Everything the stream promises still holds: every
 * byte once and in order, JSON frames whole between binary ones, a slow
 * client resynchronised, nothing left open.
 */

/**
 * Waits for a line on stdin, then prints `warm` short lines 10 ms apart (each read alone, on the event loop), then `n`
 * numbered lines, each flushed, pausing 1 ms every `every`. Bytes as written (-opost).
 */
const linesOf = (n: number, every: number, warm = 0) => ({
  command: 'bash',
  args: ['--norc', '--noprofile', '-c', 'stty -opost -echo; exec python3 -c "import sys,time\nsys.stdin.readline()\nfor i in range(int(sys.argv[3])):\n  sys.stdout.write(\'warm %03d\\n\' % i); sys.stdout.flush(); time.sleep(0.01)\nn=int(sys.argv[1])\nfor i in range(n):\n  sys.stdout.write(\'line %06d of the native output path\\n\' % i); sys.stdout.flush()\n  if i % int(sys.argv[2]) == 0: time.sleep(0.001)\nsys.stdout.write(\'done\\n\'); sys.stdout.flush()\nsys.stdin.readline()" "$0" "$1" "$2"', String(n), String(every), String(warm)],
});
/** Light output (a pause every 5 lines, ~190 bytes: read on the event loop) and a flood (~12 MB, a pause every 100). */
const LINES = linesOf(1000, 5);

/** R, then a numbered block of 3000 bytes for each byte on stdin (one read each, under the flood size); `q`: done. */
const BLOCKS = {
  command: 'bash',
  args: ['--norc', '--noprofile', '-c', 'stty raw -opost -echo; exec python3 "$0"', join(__dirname, '../../fixtures/blocks.py')],
};

function expected(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += `line ${String(i).padStart(6, '0')} of the native output path\n`;
  return s + 'done\n';
}

/** The session's terminal process and its clients' bookkeeping (private; diagnostics for tests). */
function internals(d: TestDaemon, id: string): { nativeChunks: number; fastStats: { sent: number; partial: number } } {
  const session = d.app.pool.get(id) as unknown as { pty: { nativeChunks: number } | null; stream: { clients: { fastStats: { sent: number; partial: number } } } };
  return { nativeChunks: session.pty?.nativeChunks ?? 0, fastStats: session.stream.clients.fastStats };
}

async function attach(d: TestDaemon, id: string): Promise<TestSocket> {
  const s = d.socket(`/api/sessions/${id}/ws`);
  await s.nextJson((f) => f.type === 'snapshot');
  return s;
}

describe('the native output path', () => {
  let d: TestDaemon;
  beforeEach(async () => {
    d = await startDaemon({ agents: { lines: LINES, many: linesOf(300_000, 100, 30), echo: { command: 'bash', args: ['--norc', '--noprofile', '-c', 'stty raw -echo; exec cat'] }, blocks: BLOCKS } });
  });
  afterEach(async () => {
    await d.dispose();
  });

  it('is built (npm install builds native/helper.c)', () => {
    expect(typeof nativeHelper()?.outOpen).toBe('function');
  });

  it('frames a chunk as ws does', () => {
    for (const n of [0, 1, 125, 126, 65535, 65536]) {
      const frame = binaryFrame(Buffer.alloc(n, 7));
      expect(frame.length).toBe(frameLength(n));
      expect(frame[0]).toBe(0x82);
    }
    expect([...binaryFrame(Buffer.from('hi'))]).toEqual([0x82, 2, 104, 105]);
    expect([...binaryFrame(Buffer.alloc(300)).subarray(0, 4)]).toEqual([0x82, 126, 1, 44]);
    expect([...binaryFrame(Buffer.alloc(70000)).subarray(0, 10)]).toEqual([0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
  });

  it('sends every byte once and in order to two clients, with JSON frames whole in between', async () => {
    const session = await d.create({ agent: 'lines' });
    const a = await attach(d, session.id);
    const b = await attach(d, session.id);
    a.send({ type: 'input', data: 'go\r' });
    // Meanwhile, frames of ours (errors) and ws's own (pongs) go to the same sockets.
    let errorsAsked = 0;
    const noise = setInterval(() => {
      a.ws.send('not json');
      a.ws.ping();
      b.ws.send('{"type":"nonsense"}');
      errorsAsked++;
    }, 2);
    try {
      await a.waitOutput('done\n', 20_000);
      await b.waitOutput('done\n', 20_000);
    } finally {
      clearInterval(noise);
    }
    const want = expected(1000);
    expect(a.output.toString()).toBe(want);
    expect(b.output.toString()).toBe(want);
    await waitFor(() => a.json().filter((f) => f.type === 'error').length >= errorsAsked, 5_000, 'every error frame');
    expect(a.json().filter((f) => f.type === 'error').every((f) => f.code === 'invalid_request')).toBe(true);
    expect(a.closeCode).toBeNull();
    expect(b.closeCode).toBeNull();
    const { nativeChunks, fastStats } = internals(d, session.id);
    expect(nativeChunks).toBeGreaterThan(100);
    // Chunks went out natively between the JSON frames (the first after each goes the usual way).
    expect(fastStats.sent).toBeGreaterThan(10);
  }, 40_000);

  it('keeps the frames whole for a client that stopped reading, and brings it up to date', async () => {
    const session = await d.create({ agent: 'many' });
    const slow = await attach(d, session.id);
    const socket = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    const stats = () => internals(d, session.id).fastStats;
    // The warm-up lines come one read at a time: the client is armed and gets some natively. Then it stops reading, and
    // the rest fills the kernel's socket buffers and the daemon's watermark: 300 000 lines, ~12 MB.
    d.app.pool.get(session.id).write('go\r');
    await waitFor(() => stats().sent > 0, 10_000, 'a chunk sent natively');
    socket.pause();
    await waitFor(async () => (await d.api('GET', `/api/sessions/${session.id}`)).json.session.outputBytes > 11_000_000, 30_000, 'the output');
    socket.resume();
    // Whatever it got is well-formed frames (a broken one closes the socket with 1002) and ends with the program's last line.
    await waitFor(() => slow.output.toString('latin1', Math.max(0, slow.output.length - 100)).endsWith('done\n') || slow.json().some((f) => f.type === 'snapshot' && String(f.data).includes('done')), 30_000, 'the last line');
    expect(slow.closeCode).toBeNull();
    expect(stats().sent).toBeGreaterThan(0);
    // It fell behind and got a fresh screen.
    expect(slow.json().filter((f) => f.type === 'snapshot').length).toBeGreaterThan(1);
  }, 60_000);

  it('never lets a frame cut into one of ours that is still queued (a big error frame to a client not reading)', async () => {
    const session = await d.create({ agent: 'echo' });
    const c = await attach(d, session.id);
    const keys: string[] = [];
    const type = (k: string) => {
      keys.push(k);
      c.ws.send(Buffer.from(k));
    };
    // Armed after a chunk goes out (and disarmed by any frame of ours): type until it is.
    const armed = () => (d.app.pool.get(session.id) as unknown as { stream: { clients: { slots: unknown[] } } }).stream.clients.slots.filter(Boolean).length;
    await waitFor(async () => {
      type('a');
      await c.waitOutput(keys.join(''));
      return armed() === 1;
    }, 10_000, 'the client to be armed');
    const socket = (c.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    // Error frames of ~900 KB each: more than the kernel's buffers take, so the daemon queues the rest.
    const big = 'x'.repeat(900_000);
    for (let i = 0; i < 8; i++) c.send({ type: big });
    await new Promise((r) => setTimeout(r, 200));
    // Echoes meanwhile, and while the queue drains: none may land inside a queued frame.
    const letters = 'cdefghijklmnopqrstuvwxyz';
    for (let i = 0; i < 200; i++) {
      if (i === 50) socket.resume();
      type(letters[i % letters.length]);
      await new Promise((r) => setTimeout(r, 2));
    }
    await waitFor(() => c.json().filter((f) => f.type === 'error').length === 8, 20_000, 'the 8 error frames');
    expect(c.closeCode).toBeNull();
    // It fell behind (the error frames are over its watermark) and was resynchronised: from each attached or snapshot
    // frame's offset on, every byte is the stream's own, with no gap and no duplicate (PROTOCOL.md).
    const stream = keys.join('');
    const replay = () => {
      let at = 0;
      const wrong: string[] = [];
      for (const f of c.frames) {
        if (f.json?.type === 'attached' || f.json?.type === 'snapshot') at = f.json.offset;
        if (!f.bytes) continue;
        if (f.bytes.toString() !== stream.slice(at, at + f.bytes.length)) wrong.push(`${JSON.stringify(f.bytes.toString())} at ${at}`);
        at += f.bytes.length;
      }
      return { at, wrong };
    };
    // Up to the last echo (the last letters alone recur every 24: waiting for them could stop early).
    await waitFor(() => replay().at >= stream.length, 20_000, 'the stream up to the last echo');
    expect(replay().wrong).toEqual([]);
    expect(replay().at).toBe(stream.length);
  }, 60_000);

  it('finishes a frame the socket took only part of, and the stream stays exact for a client that reads again', async () => {
    const session = await d.create({ agent: 'blocks' });
    const c = await attach(d, session.id);
    const socket = (c.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    const pty = () => (d.app.pool.get(session.id) as unknown as { pty: { nativeChunks: number; handOffs: number } }).pty;
    const stats = () => internals(d, session.id).fastStats;
    await waitFor(() => c.output.includes('R') || c.json().some((f) => f.type === 'snapshot' && String(f.data).includes('R')), 10_000, 'the program to start');
    socket.pause();
    // One block at a time (no read merges two into a flood): the kernel's buffers fill some MB in, and then a block's
    // frame goes into the socket only in part, the rest after it.
    let blocks = 0;
    const written = () => (d.app.pool.get(session.id) as unknown as { record: { outputBytes: number } }).record.outputBytes;
    while (stats().partial === 0 && blocks < 5000) {
      d.app.pool.get(session.id).write('b');
      blocks++;
      // The whole block is in before the next is asked for (the terminal may hand it over in pieces).
      while (written() < 1 + blocks * 3000) await new Promise((r) => setImmediate(r));
    }
    expect(stats().partial).toBeGreaterThan(0);
    expect(pty().handOffs).toBe(0);
    d.app.pool.get(session.id).write('q');
    socket.resume();
    await waitFor(() => c.json().some((f) => f.type === 'snapshot' && String(f.data).includes('done')) || c.output.toString('latin1', Math.max(0, c.output.length - 10)).endsWith('done\n'), 30_000, 'the end of the output');
    expect(c.closeCode).toBeNull();
    // From each attached or snapshot frame's offset on, the bytes are the stream's own (its blocks are numbered).
    let stream = 'R';
    for (let i = 0; i < blocks; i++) stream += String(i).padStart(6, '0').repeat(500);
    stream += 'done\n';
    let at = 0;
    const wrong: number[] = [];
    for (const f of c.frames) {
      if (f.json?.type === 'attached' || f.json?.type === 'snapshot') at = f.json.offset;
      if (!f.bytes) continue;
      if (f.bytes.toString('latin1') !== stream.slice(at, at + f.bytes.length)) wrong.push(at);
      at += f.bytes.length;
    }
    expect(wrong).toEqual([]);
    expect(at).toBe(stream.length);
  }, 60_000);

  /** Runs a session with two armed clients; one leaves while armed, then the session is deleted and the other leaves. */
  async function runAndEnd(): Promise<void> {
    const session = await d.create({ agent: 'echo' });
    const a = await attach(d, session.id);
    const b = await attach(d, session.id);
    const armed = () => (d.app.pool.get(session.id) as unknown as { stream: { clients: { slots: unknown[] } } }).stream.clients.slots.filter(Boolean).length;
    // Armed after a chunk goes out (and disarmed by any frame of ours, such as a state change): type until both are.
    let typed = '';
    await waitFor(async () => {
      typed += 'k';
      a.ws.send(Buffer.from('k'));
      await a.waitOutput(typed);
      await b.waitOutput(typed);
      return armed() === 2;
    }, 10_000, 'both clients to be armed');
    // A client that goes while armed lets go of its slot (whose duplicate of its socket would keep the connection open).
    a.ws.terminate();
    await waitFor(() => armed() === 1, 5_000, 'its slot to be let go');
    await d.api('DELETE', `/api/sessions/${session.id}`);
    await b.nextJson((f) => f.type === 'exit', 10_000);
    b.ws.terminate();
  }

  it('leaves no descriptor behind when armed clients go and the session ends', async () => {
    await runAndEnd(); // starts the daemon's threads, which keep descriptors of their own
    await new Promise((r) => setTimeout(r, 300));
    const before = openFds().length;
    await runAndEnd();
    // The terminal's descriptors (node-pty's, the reader thread's, the native reader's) and the sockets' duplicates are closed.
    await waitFor(() => openFds().length <= before, 5_000, `the descriptors to be closed (${before} before, now ${openFds().join(' ')})`);
  }, 60_000);

  it('can be turned off (AGENTD_NATIVE_OUTPUT=off): node-pty reads, the bytes are the same', async () => {
    process.env.AGENTD_NATIVE_OUTPUT = 'off';
    try {
      const session = await d.create({ agent: 'lines' });
      const a = await attach(d, session.id);
      a.send({ type: 'input', data: 'go\r' });
      await a.waitOutput('done\n', 20_000);
      expect(a.output.toString()).toBe(expected(1000));
      expect(internals(d, session.id).nativeChunks).toBe(0);
      expect(internals(d, session.id).fastStats.sent).toBe(0);
    } finally {
      delete process.env.AGENTD_NATIVE_OUTPUT;
    }
  }, 30_000);
});

describe('WsClient, the native path\'s view of a socket', () => {
  it('tells of every write to the socket before it happens: our frames, ws\'s pongs, pings and close frame', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => wss.once('listening', r));
    const accepted = new Promise<WebSocket>((r) => wss.once('connection', r));
    const peer = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`);
    const got: string[] = [];
    peer.on('message', (d) => got.push(String(d)));
    const server = await accepted;
    await new Promise((r) => peer.once('open', r));
    try {
      const client = new WsClient(server);
      let writes = 0;
      client.onWrite = () => writes++;
      expect(client.fastFd()).toEqual(expect.any(Number));
      client.sendJson({ type: 'x' });
      client.sendOutput(Buffer.from('y'));
      client.sendFramed(binaryFrame(Buffer.from('z')));
      server.ping();
      const pong = writes;
      peer.ping(); // ws answers with a pong of its own
      await waitFor(() => writes > pong, 5_000, 'the automatic pong');
      await waitFor(() => got.length === 3, 5_000, 'the frames');
      expect(got).toEqual(['{"type":"x"}', 'y', 'z']);
      const before = writes;
      client.close(1000, 'bye');
      expect(writes).toBeGreaterThan(before);
      expect(client.fastFd()).toBeNull();
      expect(before).toBeGreaterThanOrEqual(5);
    } finally {
      peer.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});

