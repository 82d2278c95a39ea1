/**
 * The core figures of agentd against the machine's own limits, measured in the
 * same run (docs/PERFORMANCE.md; methods of the research note perf-limits.md):
 *
 *  - throughput: `cat` of 50 and 200 MiB of base64 lines through a session to
 *    a WebSocket client, to the last byte, vs raw node-pty reading the same;
 *  - echo latency: one keystroke over the socket to `stty raw -echo; exec cat`
 *    and back, vs node-pty in-process (the floor);
 *  - memory: daemon RSS per idle shell session that printed ~1 MB, vs node-pty
 *    alone holding the same shells.
 *
 * Every server runs in its own process and this one is the client, so that a
 * server and its client use both cores as in the research harness: agentd
 * (createApp with the real SQLite store, lib.ts), raw node-pty (`core.js raw`)
 * and, as a second reference, the minimal PTY -> WebSocket relay (`core.js
 * relay`, the research's "ours, binary frames"), which tells what agentd
 * costs beyond any server of this shape, and, when a C compiler is there, a
 * native relay (bench/native-relay.c: one epoll loop in C, ttyd's kind of
 * server, which cannot be built here), which tells what the second process
 * and the socket cost without Node. The systems alternate round by round
 * (rotated: A B C, B C A, C A B, ...) after a warm-up round; each figure is
 * the median over rounds with [min..max], ratios are taken round by round.
 *
 *   npm run bench                                  (all benches)
 *   npx tsc -p . && node dist/bench/core.js        (this one, ~4 min)
 *   AGENTD_BENCH_ONLY=throughput,echo node dist/bench/core.js   (some figures)
 *   AGENTD_BENCH_STORE=memory ...   (MemoryStore instead of SQLite: what the store costs)
 *   AGENTD_BENCH_QUICK=1 ...        (a smoke run of the harness: small sizes, 2 rounds)
 *   AGENTD_BENCH_SIZES=50 ...       (throughput sizes in MiB)
 *   AGENTD_BENCH_DAEMON_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" ...   (node flags for agentd's process)
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { IPty } from 'node-pty';
import WebSocket from 'ws';
import {
  base64File,
  Child,
  DaemonHandle,
  DaemonMemory,
  fmt,
  machineNotes,
  percentile,
  processCpuMs,
  round,
  serveRequests,
  sleep,
  spread,
  Spread,
  startDaemon,
  TermClient,
  ttyBytesOf,
  waitFor,
} from './lib';

const MiB = 1024 * 1024;
/** Megabytes as the figures report them (10^6 bytes). */
const MB = 1e6;

/** A smoke run of the harness itself: its figures mean little. */
const QUICK = process.env.AGENTD_BENCH_QUICK === '1';
const THROUGHPUT_SIZES_MIB = QUICK ? [5] : process.env.AGENTD_BENCH_SIZES ? process.env.AGENTD_BENCH_SIZES.split(",").map(Number) : [50, 200];
const THROUGHPUT_ROUNDS = QUICK ? 2 : 5;
const ECHO_ROUNDS = QUICK ? 2 : 5;
const WARMUP_ROUNDS = 1;
const ECHO_WARMUP_KEYS = 200;
const ECHO_KEYS = QUICK ? 300 : 2000;
const MEMORY_SESSIONS = QUICK ? 10 : 100;
const MEMORY_PRINT_BYTES = 1_000_000;
/**
 * The screen worker folds a terminal untouched for 15 s into its serialized
 * string, sweeping every 5 s: at 35 s after the last output every idle screen
 * has been folded, with a margin for the worker's own GC.
 */
const MEMORY_SETTLE_MS = 35_000;
const MEMORY_SAMPLE_EVERY_MS = 5_000;

const GOALS = {
  throughputRatio: 0.9,
  echoP50Ratio: 1.8,
  echoP99Ms: 2,
  memoryPerSessionMB: 2,
};

/** Prints R when ready, waits for one line, then becomes `cat FILE`: timing starts at the line, for both paths. */
const gatedCat = (file: string) => ({ command: 'bash', args: ['-c', 'printf R; read -r _; exec cat "$0"', file] });
/** How long a program may take to print its ready mark (a loaded 2-core machine took over 10 s once). */
const READY_TIMEOUT_MS = 30_000;
/** A process does the echo, not the line discipline. */
const ECHO_PROGRAM = { command: 'bash', args: ['-c', 'stty raw -echo; printf R; exec cat'] };
const PLAIN_SHELL_ENV = { PS1: '$ ' };
/** An interactive shell that first prints the file given as $0. */
const MEMORY_SHELL = 'cat "$0"; exec bash --norc --noprofile -i';

// ── the raw node-pty reference (its own process) ────────────────────────

interface ThroughputRun {
  bytes: number;
  ms: number;
  mbps: number;
  /** CPU of the reading process (raw: the node-pty reader; daemon: every daemon thread) per MB. */
  cpuMsPerMB: number;
  /** Snapshots sent mid-stream because the client lagged (daemon only). */
  resyncs?: number;
}

function spawnRaw(command: string, args: string[], env: Record<string, string> = {}): IPty {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pty = require('node-pty') as typeof import('node-pty');
  return pty.spawn(command, args, {
    name: 'xterm-256color',
    cols: 120,
    rows: 40,
    cwd: os.tmpdir(),
    env: { ...process.env, TERM: 'xterm-256color', ...env } as Record<string, string>,
    encoding: null,
  } as import('node-pty').IPtyForkOptions);
}

function endRaw(p: IPty): void {
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    // Already exited.
  }
  try {
    // destroy() also closes the master fd (kill() leaves it open: node-pty #950).
    (p as unknown as { destroy(): void }).destroy();
  } catch {
    // Torn down after exit already.
  }
}

async function rawThroughput(file: string, expected: number): Promise<ThroughputRun> {
  const { command, args } = gatedCat(file);
  const p = spawnRaw(command, args);
  let ready = false;
  let t0 = 0;
  let last = 0;
  let bytes = 0;
  let exited = false;
  p.onData((d) => {
    const data = d as unknown as Buffer;
    if (!ready) {
      if (data.includes(82)) ready = true;
      return;
    }
    bytes += data.length;
    last = performance.now();
  });
  p.onExit(() => (exited = true));
  let cpu0 = process.cpuUsage();
  try {
    await waitFor(() => ready, READY_TIMEOUT_MS, 'raw cat ready', 1);
    cpu0 = process.cpuUsage();
    t0 = performance.now();
    p.write('\n');
    // node-pty may lose the last few KB when the child exits (node-pty #72): then stop at exit.
    await waitFor(() => bytes >= expected || exited, 300_000, 'raw cat output', 1);
    if (bytes < expected) await sleep(250);
  } finally {
    endRaw(p);
  }
  const ms = last - t0;
  const cpu = process.cpuUsage(cpu0);
  return { bytes, ms, mbps: bytes / MB / (ms / 1000), cpuMsPerMB: (cpu.user + cpu.system) / 1000 / (bytes / MB) };
}

/**
 * The echo program's side of a keystroke round trip: `feed` takes its output,
 * `ready` turns true at its "R", `run` times the keystrokes written by `write`.
 */
function echoProbe(readyAtStart = false) {
  let ready = readyAtStart;
  let waiting: { byte: number; resolve: () => void } | null = null;
  return {
    feed(data: Buffer): void {
      if (!ready) {
        if (data.includes(82)) ready = true;
        return;
      }
      if (waiting && data.includes(waiting.byte)) {
        const w = waiting;
        waiting = null;
        w.resolve();
      }
    },
    async run(what: string, warmup: number, keys: number, write: (key: Buffer) => void): Promise<number[]> {
      await waitFor(() => ready, READY_TIMEOUT_MS, what, 1);
      return keystrokes(warmup, keys, (key) => {
        const echoed = new Promise<void>((resolve) => (waiting = { byte: key[0], resolve }));
        write(key);
        return echoed;
      });
    },
  };
}

async function rawEcho(warmup: number, keys: number): Promise<number[]> {
  const p = spawnRaw(ECHO_PROGRAM.command, ECHO_PROGRAM.args);
  const probe = echoProbe();
  p.onData((d) => probe.feed(d as unknown as Buffer));
  try {
    return await probe.run('raw echo ready', warmup, keys, (key) => p.write(key as unknown as string));
  } finally {
    endRaw(p);
  }
}

const KEYS = Array.from({ length: 26 }, (_, i) => Buffer.from([97 + i]));

/** Sends keystrokes one at a time; returns the round trip of each timed one, in microseconds. */
async function keystrokes(warmup: number, keys: number, roundTrip: (key: Buffer) => Promise<void>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < warmup + keys; i++) {
    const key = KEYS[i % KEYS.length];
    const t0 = performance.now();
    await withTimeout(roundTrip(key), 5_000, `echo of keystroke ${i}`);
    const us = (performance.now() - t0) * 1000;
    if (i >= warmup) samples.push(us);
  }
  return samples;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)))]).finally(() => clearTimeout(timer));
}

/** The reference for memory: this process holding the same shells with node-pty alone, output read and dropped. */
async function rawMemory(file: string, sessions: number, printBytes: number): Promise<{ baseline: number; settled: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('the raw child needs --expose-gc');
  const rss = () => {
    gc();
    gc();
    return process.memoryUsage().rss;
  };
  await sleep(500);
  const baseline = rss();
  const ptys: IPty[] = [];
  const counts: number[] = [];
  try {
    for (let i = 0; i < sessions; i++) {
      const p = spawnRaw('bash', ['-c', MEMORY_SHELL, file], PLAIN_SHELL_ENV);
      counts.push(0);
      p.onData((d) => (counts[i] += (d as unknown as Buffer).length));
      ptys.push(p);
    }
    await waitFor(() => counts.every((n) => n >= printBytes), 120_000, 'raw shells to print', 50);
    await sleep(2_000);
    return { baseline, settled: rss() };
  } finally {
    for (const p of ptys) endRaw(p);
  }
}

function rawMain(): void {
  serveRequests(
    {
      throughput: (msg) => rawThroughput(msg.file as string, msg.expected as number),
      echo: (msg) => rawEcho(msg.warmup as number, msg.keys as number),
      memory: (msg) => rawMemory(msg.file as string, msg.sessions as number, msg.printBytes as number),
    },
    () => undefined,
    { pid: process.pid },
  );
}

// ── the minimal relay (its own process): the research's "ours, binary frames" ──

/**
 * The least a PTY -> WebSocket server can do: one node-pty per connection
 * (program from the query), output sent as it comes in binary frames, input
 * written through, the PTY paused while more than 1 MiB is queued. What
 * agentd costs beyond it is agentd's own; what it costs beyond raw node-pty
 * is the price of the second process and the socket.
 */
function relayMain(): void {
  /* eslint-disable @typescript-eslint/no-var-requires */
  const { WebSocketServer } = require('ws') as typeof import('ws');
  const pty = require('node-pty') as typeof import('node-pty');
  const http = require('node:http') as typeof import('node:http');
  /* eslint-enable @typescript-eslint/no-var-requires */
  const server = http.createServer();
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', (ws, req) => {
    const spec = JSON.parse(new URL(req.url ?? '/', 'http://relay').searchParams.get('program') ?? '{}') as { command: string; args: string[] };
    const p = pty.spawn(spec.command, spec.args, { name: 'xterm-256color', cols: 120, rows: 40, cwd: os.tmpdir(), env: process.env as Record<string, string>, encoding: null } as import('node-pty').IPtyForkOptions);
    let paused = false;
    p.onData((d) => {
      ws.send(d as unknown as Buffer, { binary: true });
      if (!paused && ws.bufferedAmount > RELAY_HIGH_WATER) {
        paused = true;
        p.pause();
        const check = setInterval(() => {
          if (ws.bufferedAmount > RELAY_LOW_WATER) return;
          clearInterval(check);
          paused = false;
          p.resume();
        }, 2);
      }
    });
    p.onExit(() => setTimeout(() => ws.close(), 50));
    ws.on('message', (data: Buffer) => p.write(data as unknown as string));
    ws.on('close', () => endRaw(p));
    ws.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1', () => {
    serveRequests({ cpu: () => process.cpuUsage() }, () => new Promise<void>((r) => server.close(() => r())), { port: (server.address() as { port: number }).port });
  });
}

const RELAY_HIGH_WATER = 1024 * 1024;
const RELAY_LOW_WATER = 256 * 1024;

/** A client of the relay with the same face as TermClient. */
class RelayClient implements OutputStream {
  position = 0;
  head = '';
  exited = false;
  resyncs = 0;
  onBytes: ((data: Buffer) => void) | null = null;
  constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.position += data.length;
      if (this.head.length < 4096) this.head += data.toString('latin1', 0, 4096);
      this.onBytes?.(data);
    });
    ws.on('close', () => (this.exited = true));
    ws.on('error', () => undefined);
  }
  send(data: Buffer | string): void {
    this.ws.send(typeof data === 'string' ? Buffer.from(data) : data, { binary: true });
  }
  close(): void {
    this.ws.terminate();
  }
}

// ── the native relay (bench/native-relay.c, one process per program) ────

/** Builds bench/native-relay.c into os.tmpdir(); null, saying why, where it cannot be built. */
function buildNativeRelay(): string | null {
  const source = join(__dirname, '..', '..', 'bench', 'native-relay.c');
  const binary = join(os.tmpdir(), 'agentd-bench-native-relay');
  try {
    execFileSync(process.env.CC ?? 'cc', ['-O2', '-o', binary, source, '-lutil'], { stdio: ['ignore', 'ignore', 'pipe'] });
    return binary;
  } catch (err) {
    log(`core: the native relay is not measured: ${source} did not build (${String((err as { stderr?: Buffer }).stderr ?? err).trim().split('\n')[0]})`);
    return null;
  }
}

/** One native relay process per program; its pid and port. */
interface NativeRelay {
  pid: number;
  port: number;
  stop(): void;
}

async function startNativeRelay(binary: string, program: { command: string; args: string[] }): Promise<NativeRelay> {
  const proc = spawn(binary, [program.command, ...program.args], { stdio: ['ignore', 'pipe', 'inherit'], cwd: os.tmpdir() });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`native relay exited (code ${code})`)));
    proc.stdout.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
  });
  return { pid: proc.pid!, port, stop: () => proc.kill('SIGKILL') };
}

function nativeRelayTarget(relays: Record<string, NativeRelay>): SocketTarget {
  let current: NativeRelay | null = null;
  return {
    async open(program) {
      current = relays[program];
      return new RelayClient(await openSocket(`ws://127.0.0.1:${current.port}/`));
    },
    cpuMs: async () => (current ? processCpuMs(current.pid) : 0),
    async finish(stream) {
      stream.close();
    },
  };
}

// ── the socket paths (this process is the client) ───────────────────────

/** What the measurements need of a client socket: TermClient (agentd) and RelayClient fit. */
interface OutputStream {
  position: number;
  head: string;
  exited: boolean;
  resyncs: number;
  onBytes: ((data: Buffer) => void) | null;
  send(data: Buffer | string): void;
  close(): void;
}

/** A server reached over a WebSocket: agentd or the relay. */
interface SocketTarget {
  /** Opens a stream running `program` (a key of PROGRAMS). */
  open(program: string): Promise<OutputStream>;
  /** CPU the server process has used so far, ms. */
  cpuMs(): Promise<number>;
  /** After a stream: end it and forget it (not timed). */
  finish(stream: OutputStream): Promise<void>;
}

function agentdTarget(d: DaemonHandle): SocketTarget {
  const ids = new Map<OutputStream, string>();
  return {
    async open(program) {
      const id = await d.create(program);
      const c = await TermClient.connect(d, id);
      ids.set(c, id);
      return c;
    },
    cpuMs: () => d.cpuMs(),
    async finish(stream) {
      stream.close();
      const id = ids.get(stream);
      ids.delete(stream);
      if (id) await d.api('DELETE', `/api/sessions/${id}`);
      await d.forgetEnded();
    },
  };
}

async function openSocket(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

function relayTarget(relay: Child, port: number, programs: Record<string, { command: string; args: string[] }>): SocketTarget {
  return {
    async open(program) {
      const q = encodeURIComponent(JSON.stringify(programs[program]));
      return new RelayClient(await openSocket(`ws://127.0.0.1:${port}/?program=${q}`));
    },
    cpuMs: async () => {
      const u = await relay.request<NodeJS.CpuUsage>('cpu');
      return (u.user + u.system) / 1000;
    },
    async finish(stream) {
      stream.close();
    },
  };
}

async function socketThroughput(t: SocketTarget, program: string, expected: number, name: string): Promise<ThroughputRun> {
  const c = await t.open(program);
  let ready = c.head.includes('R');
  let start = 0;
  let t0 = 0;
  let last = 0;
  let cpu0 = 0;
  let complete = false;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  c.onBytes = (data) => {
    if (!ready) {
      if (data.includes(82)) ready = true;
      return;
    }
    last = performance.now();
    if (c.position - start >= expected) {
      complete = true;
      done();
    }
  };
  let cpuMs = 0;
  try {
    await waitFor(() => ready, READY_TIMEOUT_MS, `cat ready (${name})`, 1);
    cpu0 = await t.cpuMs();
    start = c.position;
    t0 = performance.now();
    c.send('\n');
    // Every byte, or the end of the program (then whatever is still in flight gets 250 ms).
    const ended = waitFor(() => complete || c.exited, 300_000, 'exit', 20).then(() => (complete ? undefined : sleep(250)));
    await withTimeout(Promise.race([finished, ended]), 300_000, 'cat output');
    cpuMs = (await t.cpuMs()) - cpu0; // read just after the last byte (or the exit)
  } finally {
    await t.finish(c);
  }
  const bytes = c.position - start;
  const ms = last - t0;
  return { bytes, ms, mbps: bytes / MB / (ms / 1000), cpuMsPerMB: cpuMs / (bytes / MB), resyncs: c.resyncs };
}

async function socketEcho(t: SocketTarget, warmup: number, keys: number): Promise<number[]> {
  const c = await t.open('echo');
  const probe = echoProbe(c.head.includes('R'));
  c.onBytes = (data) => probe.feed(data);
  try {
    return await probe.run('echo ready', warmup, keys, (key) => c.send(key));
  } finally {
    await t.finish(c);
  }
}

// ── figures ─────────────────────────────────────────────────────────────

type System = 'agentd' | 'relay' | 'native' | 'raw';
/** A figure per system; `native` only where the native relay was built. */
type PerSystem<T> = Record<Exclude<System, 'native'>, T> & { native?: T };

interface Systems {
  agentd: SocketTarget;
  relay: SocketTarget;
  native?: SocketTarget;
  raw: Child;
}

/** The systems measured, in the order of the first round. */
const systemsOf = (sys: Systems): System[] => (sys.native ? ['raw', 'relay', 'native', 'agentd'] : ['raw', 'relay', 'agentd']);

/** Round r runs the systems rotated by r: raw relay agentd, relay agentd raw, agentd raw relay, ... */
function orderOf(systems: System[], n: number): System[] {
  return systems.map((_, i) => systems[(i + n) % systems.length]);
}

function bySystem<T>(systems: System[], f: (s: System) => T): PerSystem<T> {
  const out: Partial<Record<System, T>> = {};
  for (const s of systems) out[s] = f(s);
  return out as PerSystem<T>;
}

/** a / b round by round, or undefined where `a` was not measured. */
function ratioOf(a: number[], b: number[]): Spread | undefined {
  return a.length ? spread(pairwise(a, b), 2) : undefined;
}

interface ThroughputFigure {
  sizeMiB: number;
  rounds: number;
  mbps: PerSystem<Spread>;
  seconds: PerSystem<Spread>;
  /** CPU of the serving process per MB: agentd (every thread), the relays, the raw reader. */
  cpuMsPerMB: PerSystem<Spread>;
  /** agentd / raw node-pty, taken round by round: the goal. */
  ratio: Spread;
  /** agentd / minimal relay, round by round: what agentd itself costs. */
  ratioToRelay: Spread;
  /** relay / raw, round by round: what the second process and the socket cost. */
  relayRatio: Spread;
  /** native relay / raw, round by round: the same without Node. */
  nativeRatio?: Spread;
  /** Bytes short of the expected count, worst round (raw: node-pty's exit tail, node-pty #72). */
  shortBytes: PerSystem<number>;
  /** Snapshots agentd sent mid-stream because the client lagged. */
  resyncs: number;
}

const pairwise = (a: number[], b: number[]) => a.map((x, i) => x / b[i]);

async function measureThroughput(sys: Systems, sizeMiB: number, file: string): Promise<ThroughputFigure> {
  const expected = 2 + ttyBytesOf(file); // the echoed newline, then the file with \n -> \r\n
  const program = `cat${sizeMiB}`;
  const systems = systemsOf(sys);
  const runs: Record<System, ThroughputRun[]> = { agentd: [], relay: [], native: [], raw: [] };
  for (let n = 0; n < WARMUP_ROUNDS + THROUGHPUT_ROUNDS; n++) {
    const measured = n >= WARMUP_ROUNDS;
    for (const which of orderOf(systems, n)) {
      const run = which === 'raw' ? await sys.raw.request<ThroughputRun>('throughput', { file, expected }) : await socketThroughput(sys[which]!, program, expected, which);
      if (measured) runs[which].push(run);
      log(`  throughput ${sizeMiB} MiB ${measured ? `round ${n - WARMUP_ROUNDS + 1}` : 'warm-up'} ${which}: ${round2(run.mbps)} MB/s in ${round2(run.ms / 1000)} s, ${round(run.cpuMsPerMB, 1)} ms CPU/MB${run.bytes < expected ? ` (${expected - run.bytes} bytes short)` : ''}`);
    }
  }
  const mbps = (s: System) => runs[s].map((r) => r.mbps);
  return {
    sizeMiB,
    rounds: THROUGHPUT_ROUNDS,
    mbps: bySystem(systems, (s) => spread(mbps(s), 1)),
    seconds: bySystem(systems, (s) => spread(runs[s].map((r) => r.ms / 1000), 2)),
    cpuMsPerMB: bySystem(systems, (s) => spread(runs[s].map((r) => r.cpuMsPerMB), 1)),
    ratio: spread(pairwise(mbps('agentd'), mbps('raw')), 2),
    ratioToRelay: spread(pairwise(mbps('agentd'), mbps('relay')), 2),
    relayRatio: spread(pairwise(mbps('relay'), mbps('raw')), 2),
    nativeRatio: ratioOf(mbps('native'), mbps('raw')),
    shortBytes: bySystem(systems, (s) => Math.max(0, ...runs[s].map((r) => expected - r.bytes))),
    resyncs: runs.agentd.reduce((n, r) => n + (r.resyncs ?? 0), 0),
  };
}

interface Percentiles {
  p50: Spread;
  p90: Spread;
  p99: Spread;
  max: Spread;
}

interface EchoFigure {
  rounds: number;
  keystrokes: number;
  warmupKeystrokes: number;
  /** Median over rounds of each round's percentile, microseconds; raw = node-pty in-process, the floor. */
  us: PerSystem<Percentiles>;
  /** agentd / floor, round by round. */
  p50Ratio: Spread;
  p99Ratio: Spread;
  /** agentd / minimal relay, round by round. */
  p50RatioToRelay: Spread;
  /** relay / floor, round by round. */
  relayP50Ratio: Spread;
  /** native relay / floor, round by round: the same without Node. */
  nativeP50Ratio?: Spread;
}

function percentiles(rounds: number[][]): Percentiles {
  return {
    p50: spread(rounds.map((s) => percentile(s, 50)), 0),
    p90: spread(rounds.map((s) => percentile(s, 90)), 0),
    p99: spread(rounds.map((s) => percentile(s, 99)), 0),
    max: spread(rounds.map((s) => Math.max(...s)), 0),
  };
}

async function measureEcho(sys: Systems): Promise<EchoFigure> {
  const systems = systemsOf(sys);
  const rounds: Record<System, number[][]> = { agentd: [], relay: [], native: [], raw: [] };
  for (let n = 0; n < WARMUP_ROUNDS + ECHO_ROUNDS; n++) {
    const measured = n >= WARMUP_ROUNDS;
    for (const which of orderOf(systems, n)) {
      const samples =
        which === 'raw' ? await sys.raw.request<number[]>('echo', { warmup: ECHO_WARMUP_KEYS, keys: ECHO_KEYS }) : await socketEcho(sys[which]!, ECHO_WARMUP_KEYS, ECHO_KEYS);
      if (measured) rounds[which].push(samples);
      log(`  echo ${measured ? `round ${n - WARMUP_ROUNDS + 1}` : 'warm-up'} ${which}: p50 ${Math.round(percentile(samples, 50))} us, p99 ${Math.round(percentile(samples, 99))} us`);
    }
  }
  const pct = (s: System, p: number) => rounds[s].map((x) => percentile(x, p));
  return {
    rounds: ECHO_ROUNDS,
    keystrokes: ECHO_KEYS,
    warmupKeystrokes: ECHO_WARMUP_KEYS,
    us: bySystem(systems, (s) => percentiles(rounds[s])),
    p50Ratio: spread(pairwise(pct('agentd', 50), pct('raw', 50)), 2),
    p99Ratio: spread(pairwise(pct('agentd', 99), pct('raw', 99)), 2),
    p50RatioToRelay: spread(pairwise(pct('agentd', 50), pct('relay', 50)), 2),
    relayP50Ratio: spread(pairwise(pct('relay', 50), pct('raw', 50)), 2),
    nativeP50Ratio: ratioOf(pct('native', 50), pct('raw', 50)),
  };
}

interface MemoryFigure {
  sessions: number;
  printedBytesEach: number;
  output: string;
  settleSeconds: number;
  baseline: DaemonMemory;
  settled: DaemonMemory;
  /** RSS while the sessions were printing (no GC forced). */
  peakRssMB: number;
  perSession: { rssMB: number; heapMB: number; externalMB: number; arrayBuffersMB: number; fds: number };
  /** RSS (after GC) every few seconds after the last output: shows the screen models being folded. */
  rssAfterOutputMB: Array<{ seconds: number; rssMB: number }>;
  spawnAllSeconds: number;
  printAllSeconds: number;
  /** node-pty alone holding the same shells in its own process: RSS per session after GC. */
  rawPerSessionMB: number;
  /** daemon / raw, per session. */
  ratio: number;
}

/** 1 MB of agent-like terminal output (colours, redraws) when bench/termOutput is there, else base64 lines. */
function memoryOutputFile(): { file: string; kind: string } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { agentLikeOutput } = require('./termOutput') as { agentLikeOutput: (bytes: number, seed?: number) => Buffer };
    const file = join(os.tmpdir(), `agentd-bench-agentlike-${MEMORY_PRINT_BYTES}.txt`);
    if (!existsSync(file)) {
      writeFileSync(`${file}.${process.pid}.partial`, agentLikeOutput(MEMORY_PRINT_BYTES, 7).subarray(0, MEMORY_PRINT_BYTES));
      renameSync(`${file}.${process.pid}.partial`, file);
    }
    return { file, kind: 'agent-like terminal output (bench/termOutput.ts: colours, diffs, spinners)' };
  } catch {
    return { file: base64File(MEMORY_PRINT_BYTES), kind: 'base64 text in 100-character lines' };
  }
}

async function measureMemory(): Promise<MemoryFigure> {
  const { file, kind } = memoryOutputFile();
  const daemon = await measureDaemonMemory(file, kind);
  const { child: raw } = await Child.start(join(__dirname, 'core.js'), ['raw'], { name: 'raw node-pty (memory)', execArgv: ['--expose-gc'] });
  try {
    const ref = await raw.request<{ baseline: number; settled: number }>('memory', { file, sessions: MEMORY_SESSIONS, printBytes: MEMORY_PRINT_BYTES });
    const rawPerSessionMB = round((ref.settled - ref.baseline) / MEMORY_SESSIONS / MB, 3);
    log(`  memory: node-pty alone, ${MEMORY_SESSIONS} shells: ${rawPerSessionMB} MB per session (baseline ${mb(ref.baseline)} MB)`);
    return { ...daemon, rawPerSessionMB, ratio: round(daemon.perSession.rssMB / Math.max(rawPerSessionMB, 0.001), 0) };
  } finally {
    await raw.stop();
  }
}

async function measureDaemonMemory(file: string, kind: string): Promise<Omit<MemoryFigure, 'rawPerSessionMB' | 'ratio'>> {
  const d = await startDaemon({
    execArgv: ['--expose-gc'],
    agents: { memshell: { command: 'bash', args: ['-c', MEMORY_SHELL, file], env: PLAIN_SHELL_ENV } },
    // Room for the sessions; memory limits far away so no rule interferes.
    config: { maxConcurrentSessions: MEMORY_SESSIONS + 10, maxTotalMemoryGB: 64 },
  });
  try {
    await sleep(2_000);
    const base: DaemonMemory[] = [];
    for (let i = 0; i < 3; i++) {
      base.push(await d.memory());
      await sleep(300);
    }
    const baseline = base.sort((a, b) => a.rss - b.rss)[1];
    log(`  memory: baseline RSS ${mb(baseline.rss)} MB, heap ${mb(baseline.heapUsed)} MB`);
    const t0 = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < MEMORY_SESSIONS; i++) ids.push(await d.create('memshell'));
    const spawnAllSeconds = (performance.now() - t0) / 1000;
    let peakRss = 0;
    for (;;) {
      peakRss = Math.max(peakRss, (await d.memory(false)).rss);
      const list = (await d.api<{ sessions: Array<{ id: string; outputBytes: number; state: string }> }>('GET', '/api/sessions')).json.sessions;
      const mine = list.filter((s) => ids.includes(s.id));
      const dead = mine.filter((s) => !['running', 'idle', 'busy', 'starting', 'needs_input'].includes(s.state));
      if (dead.length) throw new Error(`${dead.length} memory sessions ended early (${dead[0].state})`);
      if (mine.length === MEMORY_SESSIONS && mine.every((s) => s.outputBytes >= MEMORY_PRINT_BYTES)) break;
      if (performance.now() - t0 > 120_000) throw new Error('sessions did not print their output within 120 s');
      await sleep(250);
    }
    const printAllSeconds = (performance.now() - t0) / 1000;
    log(`  memory: ${MEMORY_SESSIONS} sessions printed ${MEMORY_PRINT_BYTES} bytes each in ${round2(printAllSeconds)} s; peak RSS ${mb(peakRss)} MB; settling ${MEMORY_SETTLE_MS / 1000} s`);
    const trajectory: MemoryFigure['rssAfterOutputMB'] = [];
    const settleStart = performance.now();
    let settled = await d.memory();
    for (let t = MEMORY_SAMPLE_EVERY_MS; t <= MEMORY_SETTLE_MS; t += MEMORY_SAMPLE_EVERY_MS) {
      await sleep(Math.max(0, settleStart + t - performance.now()));
      settled = await d.memory();
      trajectory.push({ seconds: t / 1000, rssMB: mb(settled.rss) });
    }
    log(`  memory: RSS after output ${trajectory.map((p) => `${p.seconds}s ${p.rssMB}`).join(', ')} MB`);
    const per = (k: keyof DaemonMemory) => (settled[k] - baseline[k]) / MEMORY_SESSIONS;
    return {
      sessions: MEMORY_SESSIONS,
      printedBytesEach: MEMORY_PRINT_BYTES,
      output: kind,
      settleSeconds: MEMORY_SETTLE_MS / 1000,
      baseline,
      settled,
      peakRssMB: mb(peakRss),
      perSession: {
        rssMB: round(per('rss') / MB, 3),
        heapMB: round(per('heapUsed') / MB, 3),
        externalMB: round(per('external') / MB, 3),
        arrayBuffersMB: round(per('arrayBuffers') / MB, 3),
        fds: round(per('fds'), 2),
      },
      rssAfterOutputMB: trajectory,
      spawnAllSeconds: round2(spawnAllSeconds),
      printAllSeconds: round2(printAllSeconds),
    };
  } finally {
    await d.stop();
  }
}

// ── the bench ───────────────────────────────────────────────────────────

const round2 = (n: number) => round(n, 2);
const mb = (bytes: number) => round(bytes / MB, 1);
let quiet = false;
function log(line: string): void {
  if (!quiet) console.error(line);
}

export interface SummaryRow {
  figure: string;
  value: string;
  reference: string;
  ratio: string;
  goal: string;
  met: boolean | null;
}

export async function run(opts: { only?: string[]; quiet?: boolean } = {}): Promise<Record<string, unknown>> {
  quiet = opts.quiet ?? false;
  const only = opts.only ?? (process.env.AGENTD_BENCH_ONLY ? process.env.AGENTD_BENCH_ONLY.split(',') : ['throughput', 'echo', 'memory']);
  const store = process.env.AGENTD_BENCH_STORE === 'memory' ? 'memory' : 'sqlite';
  const started = performance.now();
  const result: Record<string, unknown> = { machine: machineNotes(), store: store === 'sqlite' ? 'SqliteStore (real, WAL, tmp dataDir)' : 'MemoryStore' };
  const summary: SummaryRow[] = [];
  /** Rows that are not goals: where the time goes. Printed after the goals. */
  const notes: SummaryRow[] = [];

  if (only.includes('throughput') || only.includes('echo')) {
    const files = new Map(THROUGHPUT_SIZES_MIB.map((size) => [size, base64File(size * MiB)]));
    const programs: Record<string, { command: string; args: string[] }> = { echo: ECHO_PROGRAM };
    for (const [size, file] of files) programs[`cat${size}`] = gatedCat(file);
    const d = await startDaemon({ agents: programs, store, execArgv: process.env.AGENTD_BENCH_DAEMON_ARGS?.split(' ').filter(Boolean) });
    const { child: raw } = await Child.start(join(__dirname, 'core.js'), ['raw'], { name: 'raw node-pty' });
    const { child: relay, ready } = await Child.start<{ port: number }>(join(__dirname, 'core.js'), ['relay'], { name: 'minimal relay' });
    const nativeBinary = buildNativeRelay();
    const natives: Record<string, NativeRelay> = {};
    const sys: Systems = { agentd: agentdTarget(d), relay: relayTarget(relay, ready.port, programs), raw };
    try {
      if (nativeBinary) {
        for (const [name, program] of Object.entries(programs)) natives[name] = await startNativeRelay(nativeBinary, program);
        sys.native = nativeRelayTarget(natives);
      }
      const nativePids = Object.values(natives).map((n) => n.pid);
      log(`core: agentd pid ${d.pid} (${store} store), minimal relay pid ${relay.pid}, ${nativePids.length ? `native relay pids ${nativePids.join(' ')}, ` : ''}raw node-pty pid ${raw.pid}, client pid ${process.pid}`);
      if (only.includes('throughput')) {
        const figures: ThroughputFigure[] = [];
        for (const [size, file] of files) figures.push(await measureThroughput(sys, size, file));
        result.throughput = figures;
        for (const f of figures) {
          summary.push({
            figure: `throughput ${f.sizeMiB} MiB, MB/s`,
            value: fmt(f.mbps.agentd),
            reference: `raw node-pty ${fmt(f.mbps.raw)}`,
            ratio: fmt(f.ratio),
            goal: `>= ${GOALS.throughputRatio}x`,
            met: f.ratio.median >= GOALS.throughputRatio,
          });
        }
      }
      if (only.includes('echo')) {
        const e = await measureEcho(sys);
        result.echo = e;
        summary.push({
          figure: 'echo p50, us',
          value: fmt(e.us.agentd.p50),
          reference: `node-pty in-process ${fmt(e.us.raw.p50)}`,
          ratio: fmt(e.p50Ratio),
          goal: `<= ${GOALS.echoP50Ratio}x floor`,
          met: e.p50Ratio.median <= GOALS.echoP50Ratio,
        });
        summary.push({
          figure: 'echo p99, us',
          value: fmt(e.us.agentd.p99),
          reference: `node-pty in-process ${fmt(e.us.raw.p99)}`,
          ratio: fmt(e.p99Ratio),
          goal: `<= ${GOALS.echoP99Ms * 1000} us`,
          met: e.us.agentd.p99.median <= GOALS.echoP99Ms * 1000,
        });
      }
      // Not goals: where the time goes (the relay is the least a second process and a socket cost).
      for (const f of (result.throughput as ThroughputFigure[] | undefined) ?? []) {
        notes.push({
          figure: `throughput ${f.sizeMiB} MiB vs minimal relay`,
          value: `agentd ${f.mbps.agentd.median}, relay ${f.mbps.relay.median} MB/s`,
          reference: `CPU/MB ms: agentd ${f.cpuMsPerMB.agentd.median}, relay ${f.cpuMsPerMB.relay.median}, raw ${f.cpuMsPerMB.raw.median}`,
          ratio: `agentd/relay ${fmt(f.ratioToRelay)}; relay/raw ${f.relayRatio.median}`,
          goal: '-',
          met: null,
        });
        if (f.mbps.native && f.nativeRatio) {
          notes.push({
            figure: `throughput ${f.sizeMiB} MiB, native relay (C)`,
            value: `${f.mbps.native.median} MB/s`,
            reference: `CPU/MB ms: ${f.cpuMsPerMB.native?.median}`,
            ratio: `native/raw ${fmt(f.nativeRatio)}`,
            goal: '-',
            met: null,
          });
        }
      }
      const e = result.echo as EchoFigure | undefined;
      if (e) {
        notes.push({
          figure: 'echo p50 vs minimal relay, us',
          value: `agentd ${e.us.agentd.p50.median}, relay ${e.us.relay.p50.median}`,
          reference: `relay p99 ${e.us.relay.p99.median}`,
          ratio: `agentd/relay ${fmt(e.p50RatioToRelay)}; relay/floor ${e.relayP50Ratio.median}`,
          goal: '-',
          met: null,
        });
        if (e.us.native && e.nativeP50Ratio) {
          notes.push({
            figure: 'echo p50, native relay (C), us',
            value: fmt(e.us.native.p50),
            reference: `p99 ${e.us.native.p99.median}`,
            ratio: `native/floor ${fmt(e.nativeP50Ratio)}`,
            goal: '-',
            met: null,
          });
        }
      }
    } finally {
      for (const n of Object.values(natives)) n.stop();
      await relay.stop();
      await raw.stop();
      await d.stop();
    }
  }

  if (only.includes('memory')) {
    const m = await measureMemory();
    result.memory = m;
    summary.push({
      figure: `daemon RSS per idle session (MB), ${m.sessions} sessions`,
      value: String(m.perSession.rssMB),
      reference: `node-pty alone ${m.rawPerSessionMB}`,
      ratio: String(m.ratio),
      goal: `<= ${GOALS.memoryPerSessionMB} MB`,
      met: m.perSession.rssMB <= GOALS.memoryPerSessionMB,
    });
  }

  result.summary = [...summary, ...notes];
  result.loadavgAtEnd = os.loadavg().map((l) => round2(l));
  result.seconds = round2((performance.now() - started) / 1000);
  return result;
}

if (require.main === module) {
  if (process.argv[2] === 'raw') {
    rawMain();
  } else if (process.argv[2] === 'relay') {
    relayMain();
  } else {
    run()
      .then((result) => {
        console.table(result.summary);
        console.log(JSON.stringify(result, null, 2));
      })
      .catch((err) => {
        console.error(err);
        process.exitCode = 1;
      });
  }
}
