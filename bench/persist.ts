/**
 * What persisting output costs: the batched SQLite writer under 100 sessions
 * streaming ~16 KiB/s each (one transaction per tick), the same with quiet
 * sessions (small chunks merged), gzip ratio on agent-like terminal output,
 * and attaching to a session with 10 MiB of history.
 *
 *   npx tsc -p . --outDir /tmp/agentd-build && node /tmp/agentd-build/bench/persist.js
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { SqliteStore } from '../server/store/SqliteStore';
import type { SessionRecord } from '../server/store/SessionStore';

const SESSIONS = 100;
const TICKS = 100;
/** A PTY delivers ~4 KiB reads (research/perf-limits.md section 1). */
const READ_BYTES = 4096;
const HISTORY_BYTES = 10 * 1024 * 1024;

const ESC = '\x1b[';
const RESET = `${ESC}0m`;
const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const WORDS = [
  'session', 'output', 'offset', 'buffer', 'store', 'flush', 'socket', 'client', 'screen', 'render',
  'parse', 'config', 'schema', 'token', 'request', 'response', 'handler', 'timeout', 'retry', 'queue',
  'const', 'return', 'await', 'function', 'import', 'export', 'interface', 'string', 'number', 'Buffer',
];
const FILES = ['server/http/app.ts', 'server/sessions/Session.ts', 'server/store/SqliteStore.ts', 'test/unit/pool.test.ts', 'README.md', 'package.json'];

/** A small seeded PRNG (mulberry32) so every run measures the same bytes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns `bytes` (or slightly more, then cut) of agent-like terminal output. */
export function agentLikeOutput(bytes: number, seed = 1): Buffer {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const sentence = (n: number): string => Array.from({ length: n }, () => pick(WORDS)).join(' ');
  const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(rnd() * 16).toString(16)).join('');
  const parts: string[] = [];
  let size = 0;
  const push = (s: string): void => {
    parts.push(s);
    size += Buffer.byteLength(s);
  };
  let line = 1;
  while (size < bytes) {
    const r = rnd();
    if (r < 0.25) {
      // A diff hunk, coloured.
      const file = pick(FILES);
      push(`${ESC}1m● Update(${file})${RESET}\r\n  ⎿  Updated ${file} with ${1 + Math.floor(rnd() * 9)} additions\r\n`);
      for (let i = 0; i < 3 + rnd() * 8; i++, line++) {
        const sign = rnd() < 0.5 ? '+' : '-';
        const colour = sign === '+' ? `${ESC}48;2;2;40;0m${ESC}32m` : `${ESC}48;2;61;1;0m${ESC}31m`;
        push(`${ESC}2m${String(line).padStart(6)}${RESET} ${colour}${sign}  ${sentence(3 + Math.floor(rnd() * 6))};${RESET}\r\n`);
      }
    } else if (r < 0.45) {
      // Spinner redrawn in place while "thinking".
      const verb = pick(['Thinking', 'Reading', 'Searching', 'Compiling', 'Testing']);
      for (let i = 0; i < 5 + rnd() * 15; i++) {
        push(`\r${ESC}2K${ESC}38;5;174m${SPINNER[i % SPINNER.length]} ${verb}…${RESET} ${ESC}2m(${i}s · esc to interrupt)${RESET}`);
      }
      push('\r\n');
    } else if (r < 0.6) {
      // The input box, box-drawn, with a multi-line redraw.
      const width = 80;
      push(`${ESC}3A${ESC}2m╭${'─'.repeat(width - 2)}╮${RESET}\r\n`);
      push(`${ESC}2m│${RESET} > ${sentence(4).padEnd(width - 5)}${ESC}2m│${RESET}\r\n`);
      push(`${ESC}2m╰${'─'.repeat(width - 2)}╯${RESET}\r\n`);
    } else if (r < 0.75) {
      // Structured log lines from a tool run.
      for (let i = 0; i < 2 + rnd() * 6; i++) {
        const level = pick([`${ESC}32mINFO`, `${ESC}33mWARN`, `${ESC}36mDEBUG`]);
        push(`${ESC}90m2026-01-0${1 + Math.floor(rnd() * 9)}T12:${String(Math.floor(rnd() * 60)).padStart(2, '0')}:0${Math.floor(rnd() * 10)}.${hex(3)}Z${RESET} ${level}${RESET} ${sentence(5)} id=${hex(8)} took=${Math.floor(rnd() * 900)}ms\r\n`);
      }
    } else if (r < 0.85) {
      // A progress bar updated with \r and erase-line.
      for (let p = 0; p <= 100; p += 5 + Math.floor(rnd() * 15)) {
        const done = Math.floor(p / 4);
        push(`\r${ESC}K${ESC}36m${'█'.repeat(done)}${ESC}2m${'░'.repeat(25 - done)}${RESET} ${p}% ${hex(4)}`);
      }
      push('\r\n');
    } else if (r < 0.93) {
      // `ls -la` with colours.
      for (let i = 0; i < 3 + rnd() * 6; i++) {
        const dir = rnd() < 0.3;
        const name = dir ? `${ESC}01;34m${pick(WORDS)}${RESET}` : `${pick(WORDS)}.${pick(['ts', 'js', 'json', 'md'])}`;
        push(`${dir ? 'd' : '-'}rw-r--r--  1 agent agent ${String(Math.floor(rnd() * 99999)).padStart(6)} Jan ${1 + Math.floor(rnd() * 28)} 12:0${Math.floor(rnd() * 10)} ${name}\r\n`);
      }
    } else {
      // Prose from the model, wrapped.
      push(`${ESC}1m●${RESET} ${sentence(12)}\r\n  ${sentence(14)}\r\n  ${sentence(9)}.\r\n\r\n`);
    }
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

export interface PersistBenchResult {
  /** gzip on 10 MiB of agent-like output, in 64 KiB chunks (the store's chunk size). */
  compression: Array<{ level: number; ratio: number; compressMsPerMB: number; decompressMsPerMB: number }>;
  /** What the store itself achieved: raw output bytes / bytes in the output table. */
  storedRatio: number;
  /** 100 sessions x ~16 KiB/s in 4 KiB reads; one flush (one transaction) per tick, synchronous on the event loop. */
  streaming: FlushFigures;
  /** 100 quiet sessions x ~1 KiB/s: every flush rewrites each session's small newest chunk. */
  quiet: FlushFigures;
  /** appendOutput, the call on the output path. */
  appendUsPerCall: number;
  /** readOutput of a whole 10 MiB history after reopening the database. */
  attach10MiB: { firstMs: number; medianMs: number; bytes: number };
  /** SqliteStore.open of the resulting database (lock, quick_check, migrations). */
  openMs: number;
  databaseMB: number;
}

export interface FlushFigures {
  sessions: number;
  bytesPerTick: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const round = (n: number, digits = 2): number => Number(n.toFixed(digits));

function session(id: string, now: number): SessionRecord {
  return {
    id, agent: 'claude', projectPath: '/home/dev/project', state: 'busy', pid: 1000, pidStartTime: 1, tag: id,
    agentSessionId: null, createdAt: now, lastActivityAt: now, expiresAt: null, warnedAt: null, endedAt: null,
    cols: 120, rows: 40, exitCode: null, signal: null, endReason: null, deviceToken: null, outputBytes: 0,
  };
}

function measureCompression(data: Buffer): PersistBenchResult['compression'] {
  const chunk = 64 * 1024;
  const mb = data.length / (1024 * 1024);
  return [1, 3, 6, 9].map((level) => {
    const packed: Buffer[] = [];
    let t = performance.now();
    for (let o = 0; o < data.length; o += chunk) packed.push(gzipSync(data.subarray(o, o + chunk), { level }));
    const compressMs = performance.now() - t;
    t = performance.now();
    for (const p of packed) gunzipSync(p);
    const decompressMs = performance.now() - t;
    const size = packed.reduce((n, p) => n + p.length, 0);
    return { level, ratio: round(data.length / size), compressMsPerMB: round(compressMs / mb), decompressMsPerMB: round(decompressMs / mb) };
  });
}

/** Streams `bytesPerTick` per session per tick for TICKS ticks and times each flush. */
function measureFlushes(dataDir: string, source: Buffer, bytesPerTick: number): FlushFigures & { appendUs: number } {
  const store = SqliteStore.open({ dataDir, flushIntervalMs: 3_600_000 });
  const now = Date.now();
  const offsets = new Array<number>(SESSIONS).fill(0);
  for (let s = 0; s < SESSIONS; s++) store.putSession(session(`s${s}`, now));
  store.flush();
  const times: number[] = [];
  let appendMs = 0;
  let appends = 0;
  let cursor = 0;
  for (let tick = 0; tick < TICKS; tick++) {
    for (let s = 0; s < SESSIONS; s++) {
      for (let left = bytesPerTick; left > 0; ) {
        const size = Math.min(READ_BYTES, left);
        if (cursor + size > source.length) cursor = 0;
        const piece = source.subarray(cursor, cursor + size);
        cursor += size;
        const t = performance.now();
        store.appendOutput(`s${s}`, offsets[s], piece);
        appendMs += performance.now() - t;
        appends++;
        offsets[s] += size;
        left -= size;
      }
    }
    const t = performance.now();
    store.flush();
    times.push(performance.now() - t);
  }
  store.close();
  const sorted = times.slice(2).sort((a, b) => a - b); // the first ticks warm the statement cache and the WAL
  return {
    sessions: SESSIONS,
    bytesPerTick: bytesPerTick * SESSIONS,
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted[sorted.length - 1]),
    appendUs: round((appendMs / appends) * 1000),
  };
}

function measureAttach(dataDir: string, history: Buffer): { attach: PersistBenchResult['attach10MiB']; storedRatio: number; openMs: number } {
  let store = SqliteStore.open({ dataDir });
  for (let o = 0; o < history.length; o += READ_BYTES) store.appendOutput('big', o, history.subarray(o, o + READ_BYTES));
  store.close();
  let t = performance.now();
  store = SqliteStore.open({ dataDir });
  const openMs = performance.now() - t;
  const stored = (store as unknown as { db: import('better-sqlite3').Database }).db
    .prepare("SELECT sum(length(data)) n FROM output WHERE session_id = 'big'").get() as { n: number };
  const reads: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 7; i++) {
    t = performance.now();
    bytes = store.readOutput('big', 0)?.data.length ?? 0;
    reads.push(performance.now() - t);
  }
  store.close();
  const firstMs = reads[0];
  return {
    attach: { firstMs: round(firstMs), medianMs: round(reads.slice().sort((a, b) => a - b)[3]), bytes },
    storedRatio: round(history.length / stored.n),
    openMs: round(openMs),
  };
}

export async function run(): Promise<PersistBenchResult> {
  const root = mkdtempSync(join(tmpdir(), 'agentd-bench-persist-'));
  try {
    const history = agentLikeOutput(HISTORY_BYTES, 7);
    const compression = measureCompression(history);
    const streaming = measureFlushes(join(root, 'streaming'), history, 16 * 1024);
    const quiet = measureFlushes(join(root, 'quiet'), history, 1024);
    const { attach, storedRatio, openMs } = measureAttach(join(root, 'attach'), history);
    const { appendUs, ...streamingFigures } = streaming;
    const { appendUs: _quietAppend, ...quietFigures } = quiet;
    void _quietAppend;
    return {
      compression,
      storedRatio,
      streaming: streamingFigures,
      quiet: quietFigures,
      appendUsPerCall: appendUs,
      attach10MiB: attach,
      openMs,
      databaseMB: round(statSync(join(root, 'streaming', 'agentd.db')).size / (1024 * 1024)),
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function print(r: PersistBenchResult): void {
  const lines = [
    `persist: ${SESSIONS} sessions, ${TICKS} ticks, one transaction per tick (synchronous, on the event loop)`,
    `  ~16 KiB/s each (${(r.streaming.bytesPerTick / 1024 / 1024).toFixed(2)} MiB/tick): flush p50 ${r.streaming.p50Ms} ms, p99 ${r.streaming.p99Ms} ms, max ${r.streaming.maxMs} ms`,
    `  ~1 KiB/s each (small chunks merged):   flush p50 ${r.quiet.p50Ms} ms, p99 ${r.quiet.p99Ms} ms, max ${r.quiet.maxMs} ms`,
    `  appendOutput: ${r.appendUsPerCall} µs per 4 KiB call`,
    `  gzip on agent-like output, 64 KiB chunks: ` + r.compression.map((c) => `level ${c.level} ${c.ratio}x (${c.compressMsPerMB} ms/MB in, ${c.decompressMsPerMB} ms/MB out)`).join('; '),
    `  stored by the store (level 1): ${r.storedRatio}x`,
    `  attach to 10 MiB of history after reopen: first read ${r.attach10MiB.firstMs} ms, median ${r.attach10MiB.medianMs} ms (${r.attach10MiB.bytes} bytes)`,
    `  open with quick_check: ${r.openMs} ms; streaming database after ${TICKS} ticks: ${r.databaseMB} MB`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (require.main === module) {
  run().then(print, (err) => {
    process.stderr.write(`bench persist failed: ${(err as Error).stack}\n`);
    process.exit(1);
  });
}
