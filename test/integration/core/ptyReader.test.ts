import { createHash } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { nativeHelper } from '../../../server/common/native';
import { NodePtyBackend } from '../../../server/pty/NodePtyBackend';
import { PtyProcess } from '../../../server/pty/PtyBackend';
import { ReadThread } from '../../../server/pty/ReadThread';
import { waitFor } from '../../helpers/wait';

/**
 * The reader thread (server/pty/ReadThread.ts) with real PTYs: a flooding
 * terminal is read there, a quiet one on the event loop, and never both at
 * once — every byte arrives once and in order across the hand-offs, at exit,
 * and when the thread is lost.
 */

interface Run {
  pty: PtyProcess;
  bytes: () => Buffer;
  exited: Promise<void>;
  handOffs: () => number;
}

function spawn(backend: NodePtyBackend, program: string): Run {
  // stty -opost: the bytes arrive exactly as written (no \n -> \r\n), so they can be compared whole.
  const pty = backend.spawn({
    file: 'bash',
    args: ['--norc', '--noprofile', '-c', `stty -opost -echo; exec python3 -c '${program}'`],
    cwd: '/tmp',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color' },
    cols: 80,
    rows: 24,
  });
  const chunks: Buffer[] = [];
  pty.onData((d) => chunks.push(d));
  const exited = new Promise<void>((resolve) => pty.onExit(() => resolve()));
  return { pty, bytes: () => Buffer.concat(chunks), exited, handOffs: () => (pty as unknown as { handOffs: number }).handOffs };
}

/** A python program writing `blocks` of numbered lines (`lines` each), pausing `pauseMs` between blocks. */
function linesProgram(blocks: number, lines: number, pauseMs: number): string {
  return [
    'import sys, time',
    'w = sys.stdout.buffer',
    `for b in range(${blocks}):`,
    `  w.write(b"".join(b"%d:%07d:0123456789abcdefghijklmnopqrstuvwxyz\\n" % (b, i) for i in range(${lines}))); w.flush()`,
    `  time.sleep(${pauseMs / 1000})`,
  ].join('\n');
}

function expectedLines(blocks: number, lines: number): Buffer {
  const parts: string[] = [];
  for (let b = 0; b < blocks; b++) for (let i = 0; i < lines; i++) parts.push(`${b}:${String(i).padStart(7, '0')}:0123456789abcdefghijklmnopqrstuvwxyz\n`);
  return Buffer.from(parts.join(''));
}

/** This process's descriptors of terminal masters (node-pty's and the thread's duplicates). */
function ptyMasters(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === '/dev/ptmx' || readlinkSync(`/proc/self/fd/${fd}`) === '/dev/pts/ptmx';
    } catch {
      return false;
    }
  }).length;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('reading a terminal on the reader thread', () => {
  let thread: ReadThread;
  let backend: NodePtyBackend;

  beforeEach(() => {
    thread = new ReadThread();
    backend = new NodePtyBackend(thread);
  });

  afterEach(async () => {
    await thread.dispose();
  });

  it('has the native helper it needs (npm install builds native/helper.c)', () => {
    expect(typeof nativeHelper()?.dup).toBe('function');
  });

  it('hands a flood to the thread and back after each quiet spell, every byte once and in order', async () => {
    // Three floods of ~5 MB with 300 ms of quiet between them: each one goes to the thread, each quiet spell back.
    const run = spawn(backend, linesProgram(3, 100_000, 300));
    await run.exited;
    const want = expectedLines(3, 100_000);
    expect(run.bytes().length).toBe(want.length);
    expect(sha(run.bytes())).toBe(sha(want));
    expect(run.handOffs()).toBeGreaterThanOrEqual(3);
    run.pty.dispose();
  }, 60_000);

  it('keeps what a flooding program wrote right before it exited, and closes its descriptor', async () => {
    // Exits straight after the flood: the thread reads to the hang-up before the exit is reported, then closes its duplicate.
    const before = ptyMasters();
    for (let i = 0; i < 8; i++) {
      const run = spawn(backend, linesProgram(1, 40_000 + i * 997, 0));
      await run.exited;
      const want = expectedLines(1, 40_000 + i * 997);
      expect(run.bytes().length).toBe(want.length);
      expect(run.bytes().equals(want)).toBe(true);
      expect(run.handOffs()).toBeGreaterThanOrEqual(1);
      // Closed by the exit itself, not only by dispose().
      await waitFor(() => ptyMasters() === before, 5_000, 'the terminal descriptors to be closed');
      run.pty.dispose();
    }
  }, 60_000);

  it('reads light output on the event loop (a keystroke echo takes no thread hop)', async () => {
    const run = spawn(backend, 'import sys, time\nfor i in range(20):\n  sys.stdout.write("line %d\\n" % i); sys.stdout.flush(); time.sleep(0.01)');
    await run.exited;
    expect(run.bytes().toString()).toBe(Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join(''));
    expect(run.handOffs()).toBe(0);
    run.pty.dispose();
  }, 30_000);

  it('gives the terminal back to the event loop when the thread is lost, and output goes on', async () => {
    // Numbered lines, slowly after a first flood: once the thread is gone the later lines still arrive, in order.
    const program = [
      'import sys, time',
      'w = sys.stdout.buffer',
      'w.write(b"x" * 2000000 + b"\\n"); w.flush()',
      'for i in range(40):',
      '  w.write(b"after %d\\n" % i); w.flush(); time.sleep(0.02)',
    ].join('\n');
    const run = spawn(backend, program);
    await waitFor(() => run.handOffs() > 0, 10_000, 'the flood to go to the thread');
    await (thread as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await run.exited;
    const text = run.bytes().toString();
    const after = [...text.matchAll(/after (\d+)\n/g)].map((m) => Number(m[1]));
    // Bytes the thread had read but not handed over are lost with it; everything read since is whole and in order.
    expect(after.length).toBeGreaterThan(20);
    expect(after).toEqual([...after].sort((a, b) => a - b));
    expect(after[after.length - 1]).toBe(39);
    run.pty.dispose();
  }, 30_000);

  it('reads on the event loop only when there is no thread', async () => {
    const plain = new NodePtyBackend(null);
    const run = spawn(plain, linesProgram(1, 50_000, 0));
    await run.exited;
    expect(run.bytes().equals(expectedLines(1, 50_000))).toBe(true);
    expect(run.handOffs()).toBe(0);
    run.pty.dispose();
  }, 30_000);
});
