/**
 * The core figures of agentd against the machine's own limits, measured in the
 * same run (docs/PERFORMANCE.md; methods of docs research perf-limits.md):
 *
 *  - throughput: `cat` of 50 and 200 MiB of base64 lines through a session to
 *    a WebSocket client, to the last byte, vs raw node-pty reading the same;
 *  - echo latency: one keystroke over the socket to `stty raw -echo; exec cat`
 *    and back, vs node-pty in-process (the floor);
 *  - memory: daemon RSS per idle shell session that printed ~1 MB.
 *
 * Three processes: the daemon (real SQLite store) in one child, raw node-pty
 * in another, and this process as the WebSocket client, so that the daemon
 * and its client use both cores as in the research harness. Systems compared
 * alternate round by round (A B, B A, ...) after a warm-up round; each figure
 * is the median over rounds, with [min..max].
 *
 *   npm run bench                                  (all benches)
 *   npx tsc -p . && node dist/bench/core.js        (this one)
 *   AGENTD_BENCH_ONLY=throughput,echo node dist/bench/core.js   (some figures)
 *   AGENTD_BENCH_STORE=memory ...   (MemoryStore instead of SQLite: to see what the store costs)
 */
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { IPty } from 'node-pty';
import {
  base64File,
  Child,
  DaemonHandle,
  DaemonMemory,
  fmt,
  machineNotes,
  percentile,
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

/** AGENTD_BENCH_QUICK=1: a smoke run of the harness itself (small sizes, 2 rounds); its figures mean little. */
const QUICK = process.env.AGENTD_BENCH_QUICK === '1';
const THROUGHPUT_SIZES_MIB = QUICK ? [5] : [50, 200];
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
/** A process does the echo, not the line discipline. */
const ECHO_PROGRAM = { command: 'bash', args: ['-c', 'stty raw -echo; printf R; exec cat'] };
const PLAIN_SHELL_ENV = { PS1: '$ ' };

// ── the raw node-pty reference (its own process) ────────────────────────

interface ThroughputRun {
  bytes: number;
  ms: number;
  mbps: number;
  /** Snapshots sent mid-stream because the client lagged (daemon only). */
  resyncs?: number;
}

function spawnRaw(command: string, args: string[]): IPty {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pty = require('node-pty') as typeof import('node-pty');
  return pty.spawn(command, args, {
    name: 'xterm-256color',
    cols: 120,
    rows: 40,
    cwd: os.tmpdir(),
    env: { ...process.env, TERM: 'xterm-256color' } as Record<string, string>,
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
  try {
    await waitFor(() => ready, 10_000, 'raw cat ready', 1);
    t0 = performance.now();
    p.write('\n');
    // node-pty may lose the last few KB when the child exits (node-pty #72): then stop at exit.
    await waitFor(() => bytes >= expected || exited, 300_000, 'raw cat output', 1);
    if (bytes < expected) await sleep(250);
  } finally {
    endRaw(p);
  }
  const ms = last - t0;
  return { bytes, ms, mbps: bytes / MB / (ms / 1000) };
}

async function rawEcho(warmup: number, keys: number): Promise<number[]> {
  const p = spawnRaw(ECHO_PROGRAM.command, ECHO_PROGRAM.args);
  let ready = false;
  let waiting: { byte: number; resolve: () => void } | null = null;
  p.onData((d) => {
    const data = d as unknown as Buffer;
    if (!ready) {
      if (data.includes(82)) ready = true;
      return;
    }
    if (waiting && data.includes(waiting.byte)) {
      const w = waiting;
      waiting = null;
      w.resolve();
    }
  });
  try {
    await waitFor(() => ready, 10_000, 'raw echo ready', 1);
    return await keystrokes(warmup, keys, (key) => {
      const echoed = new Promise<void>((resolve) => (waiting = { byte: key[0], resolve }));
      p.write(key as unknown as string);
      return echoed;
    });
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

function rawMain(): void {
  serveRequests(
    {
      throughput: (msg) => rawThroughput(msg.file as string, msg.expected as number),
      echo: (msg) => rawEcho(msg.warmup as number, msg.keys as number),
    },
    () => undefined,
    { pid: process.pid },
  );
}

// ── the daemon path (this process is the client) ────────────────────────

async function daemonThroughput(d: DaemonHandle, agent: string, expected: number): Promise<ThroughputRun> {
  const id = await d.create(agent);
  const c = await TermClient.connect(d, id);
  let ready = c.snapshotText.includes('R');
  let start = 0;
  let t0 = 0;
  let last = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  c.onBytes = (data) => {
    if (!ready) {
      if (data.includes(82)) ready = true;
      return;
    }
    last = performance.now();
    if (c.position - start >= expected) done();
  };
  try {
    await waitFor(() => ready, 10_000, 'daemon cat ready', 1);
    start = c.position;
    t0 = performance.now();
    c.send('\n');
    await withTimeout(Promise.race([finished, waitFor(() => c.exited, 300_000, 'exit', 20).then(() => sleep(250))]), 300_000, 'daemon cat output');
  } finally {
    c.close();
  }
  const bytes = c.position - start;
  const ms = last - t0;
  return { bytes, ms, mbps: bytes / MB / (ms / 1000), resyncs: c.resyncs };
}

async function daemonEcho(d: DaemonHandle, warmup: number, keys: number): Promise<number[]> {
  const id = await d.create('echo');
  const c = await TermClient.connect(d, id);
  let ready = c.snapshotText.includes('R');
  let waiting: { byte: number; resolve: () => void } | null = null;
  c.onBytes = (data) => {
    if (!ready) {
      if (data.includes(82)) ready = true;
      return;
    }
    if (waiting && data.includes(waiting.byte)) {
      const w = waiting;
      waiting = null;
      w.resolve();
    }
  };
  try {
    await waitFor(() => ready, 10_000, 'daemon echo ready', 1);
    return await keystrokes(warmup, keys, (key) => {
      const echoed = new Promise<void>((resolve) => (waiting = { byte: key[0], resolve }));
      c.send(key);
      return echoed;
    });
  } finally {
    c.close();
    await d.api('DELETE', `/api/sessions/${id}`);
  }
}

// ── figures ─────────────────────────────────────────────────────────────

interface ThroughputFigure {
  sizeMiB: number;
  rounds: number;
  daemonMBps: Spread;
  rawMBps: Spread;
  /** daemon / raw, taken round by round. */
  ratio: Spread;
  daemonSeconds: Spread;
  rawSeconds: Spread;
  /** Bytes short of the expected count, worst round (raw: node-pty's exit tail). */
  daemonShortBytes: number;
  rawShortBytes: number;
  resyncs: number;
}

async function measureThroughput(d: DaemonHandle, raw: Child, sizeMiB: number, file: string): Promise<ThroughputFigure> {
  const expected = 2 + ttyBytesOf(file); // the echoed newline, then the file with \n -> \r\n
  const agent = `cat${sizeMiB}`;
  const daemonRuns: ThroughputRun[] = [];
  const rawRuns: ThroughputRun[] = [];
  for (let round = 0; round < WARMUP_ROUNDS + THROUGHPUT_ROUNDS; round++) {
    const measured = round >= WARMUP_ROUNDS;
    const order = round % 2 === 0 ? ['raw', 'daemon'] : ['daemon', 'raw'];
    for (const which of order) {
      const run = which === 'raw' ? await raw.request<ThroughputRun>('throughput', { file, expected }) : await daemonThroughput(d, agent, expected);
      if (measured) (which === 'raw' ? rawRuns : daemonRuns).push(run);
      log(`  throughput ${sizeMiB} MiB ${measured ? `round ${round - WARMUP_ROUNDS + 1}` : 'warm-up'} ${which}: ${round2(run.mbps)} MB/s in ${round2(run.ms / 1000)} s${run.bytes < expected ? ` (${expected - run.bytes} bytes short)` : ''}`);
    }
    await d.forgetEnded();
  }
  return {
    sizeMiB,
    rounds: THROUGHPUT_ROUNDS,
    daemonMBps: spread(daemonRuns.map((r) => r.mbps), 1),
    rawMBps: spread(rawRuns.map((r) => r.mbps), 1),
    ratio: spread(daemonRuns.map((r, i) => r.mbps / rawRuns[i].mbps), 2),
    daemonSeconds: spread(daemonRuns.map((r) => r.ms / 1000), 2),
    rawSeconds: spread(rawRuns.map((r) => r.ms / 1000), 2),
    daemonShortBytes: Math.max(0, ...daemonRuns.map((r) => expected - r.bytes)),
    rawShortBytes: Math.max(0, ...rawRuns.map((r) => expected - r.bytes)),
    resyncs: daemonRuns.reduce((n, r) => n + (r.resyncs ?? 0), 0),
  };
}

interface EchoFigure {
  rounds: number;
  keystrokes: number;
  warmupKeystrokes: number;
  /** Median over rounds of each round's percentile, microseconds. */
  daemon: { p50: Spread; p90: Spread; p99: Spread; max: Spread };
  floor: { p50: Spread; p90: Spread; p99: Spread; max: Spread };
  p50Ratio: Spread;
  p99Ratio: Spread;
}

function percentiles(rounds: number[][]): EchoFigure['daemon'] {
  return {
    p50: spread(rounds.map((s) => percentile(s, 50)), 0),
    p90: spread(rounds.map((s) => percentile(s, 90)), 0),
    p99: spread(rounds.map((s) => percentile(s, 99)), 0),
    max: spread(rounds.map((s) => Math.max(...s)), 0),
  };
}

async function measureEcho(d: DaemonHandle, raw: Child): Promise<EchoFigure> {
  const daemonRounds: number[][] = [];
  const rawRounds: number[][] = [];
  for (let round = 0; round < WARMUP_ROUNDS + ECHO_ROUNDS; round++) {
    const measured = round >= WARMUP_ROUNDS;
    const order = round % 2 === 0 ? ['raw', 'daemon'] : ['daemon', 'raw'];
    for (const which of order) {
      const samples =
        which === 'raw'
          ? await raw.request<number[]>('echo', { warmup: ECHO_WARMUP_KEYS, keys: ECHO_KEYS })
          : await daemonEcho(d, ECHO_WARMUP_KEYS, ECHO_KEYS);
      if (measured) (which === 'raw' ? rawRounds : daemonRounds).push(samples);
      log(`  echo ${measured ? `round ${round - WARMUP_ROUNDS + 1}` : 'warm-up'} ${which}: p50 ${Math.round(percentile(samples, 50))} us, p99 ${Math.round(percentile(samples, 99))} us`);
    }
    await d.forgetEnded();
  }
  return {
    rounds: ECHO_ROUNDS,
    keystrokes: ECHO_KEYS,
    warmupKeystrokes: ECHO_WARMUP_KEYS,
    daemon: percentiles(daemonRounds),
    floor: percentiles(rawRounds),
    p50Ratio: spread(daemonRounds.map((s, i) => percentile(s, 50) / percentile(rawRounds[i], 50)), 2),
    p99Ratio: spread(daemonRounds.map((s, i) => percentile(s, 99) / percentile(rawRounds[i], 99)), 2),
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
}

/** 1 MB of agent-like terminal output (colours, redraws) when bench/termOutput is there, else base64 lines. */
function memoryOutputFile(): { file: string; kind: string } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { agentLikeOutput } = require('./termOutput') as { agentLikeOutput: (bytes: number, seed?: number) => Buffer };
    const file = join(os.tmpdir(), `agentd-bench-agentlike-${MEMORY_PRINT_BYTES}.txt`);
    if (!existsSync(file)) writeFileSync(file, agentLikeOutput(MEMORY_PRINT_BYTES, 7).subarray(0, MEMORY_PRINT_BYTES));
    return { file, kind: 'agent-like terminal output (bench/termOutput.ts: colours, diffs, spinners)' };
  } catch {
    return { file: base64File(MEMORY_PRINT_BYTES), kind: 'base64 text in 100-character lines' };
  }
}

async function measureMemory(): Promise<MemoryFigure> {
  const { file, kind } = memoryOutputFile();
  const d = await startDaemon({
    execArgv: ['--expose-gc'],
    agents: { memshell: { command: 'bash', args: ['-c', 'cat "$0"; exec bash --norc --noprofile -i', file], env: PLAIN_SHELL_ENV } },
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

  if (only.includes('throughput') || only.includes('echo')) {
    const files = new Map(THROUGHPUT_SIZES_MIB.map((s) => [s, base64File(s * MiB)]));
    const agents: Record<string, { command: string; args: string[]; env?: Record<string, string> }> = { echo: ECHO_PROGRAM };
    for (const [size, file] of files) agents[`cat${size}`] = gatedCat(file);
    const d = await startDaemon({ agents, store });
    const { child: raw } = await Child.start(join(__dirname, 'core.js'), ['raw'], { name: 'raw node-pty' });
    log(`core: daemon pid ${d.pid} (${store} store), raw node-pty pid ${raw.pid}, client pid ${process.pid}`);
    try {
      if (only.includes('throughput')) {
        const figures: ThroughputFigure[] = [];
        for (const [size, file] of files) figures.push(await measureThroughput(d, raw, size, file));
        result.throughput = figures;
        for (const f of figures) {
          summary.push({
            figure: `throughput ${f.sizeMiB} MiB (MB/s)`,
            value: fmt(f.daemonMBps),
            reference: `raw node-pty ${fmt(f.rawMBps)}`,
            ratio: fmt(f.ratio),
            goal: `>= ${GOALS.throughputRatio}x`,
            met: f.ratio.median >= GOALS.throughputRatio,
          });
        }
      }
      if (only.includes('echo')) {
        const e = await measureEcho(d, raw);
        result.echo = e;
        summary.push({
          figure: 'echo p50 (us)',
          value: fmt(e.daemon.p50),
          reference: `node-pty in-process ${fmt(e.floor.p50)}`,
          ratio: fmt(e.p50Ratio),
          goal: `<= ${GOALS.echoP50Ratio}x floor`,
          met: e.p50Ratio.median <= GOALS.echoP50Ratio,
        });
        summary.push({
          figure: 'echo p99 (us)',
          value: fmt(e.daemon.p99),
          reference: `node-pty in-process ${fmt(e.floor.p99)}`,
          ratio: fmt(e.p99Ratio),
          goal: `<= ${GOALS.echoP99Ms * 1000} us`,
          met: e.daemon.p99.median <= GOALS.echoP99Ms * 1000,
        });
      }
    } finally {
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
      reference: `baseline RSS ${mb(m.baseline.rss)} MB; research: node-pty alone 0.009 MB`,
      ratio: '-',
      goal: `<= ${GOALS.memoryPerSessionMB} MB`,
      met: m.perSession.rssMB <= GOALS.memoryPerSessionMB,
    });
  }

  result.summary = summary;
  result.seconds = round2((performance.now() - started) / 1000);
  return result;
}

if (require.main === module) {
  if (process.argv[2] === 'raw') {
    rawMain();
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
