/**
 * What persisting output costs: the batched SQLite writer under 100 sessions
 * streaming 16 KiB a tick each (one transaction per tick), the same with
 * quiet sessions (a sliver per tick), the ratio the store achieves on
 * agent-like terminal output (and what each codec would), and attaching to a
 * session with 10 MiB of history. A flush is timed twice: the event loop's
 * share (what blocks terminals) and start to commit (how soon bytes are
 * durable).
 *
 *   npx tsc -p . && node dist/bench/persist.js
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync, gzipSync, type BrotliOptions } from 'node:zlib';
import Database from 'better-sqlite3';
import { SqliteStore, type FlushStats, type SqliteStoreOptions } from '../server/store/SqliteStore';
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
  /** Codecs on 10 MiB of agent-like output, cut in rows of the given size. */
  compression: CodecFigures[];
  /** 100 sessions x 16 KiB per tick in 4 KiB reads, ticks every TICK_MS, flushed as the daemon's timer does. */
  streaming: FlushFigures;
  /** 100 quiet sessions x 1 KiB per tick: every tick writes a sliver per session. */
  quiet: FlushFigures;
  /** appendOutput, the call on the output path. */
  appendUsPerCall: number;
  /** readOutput of a whole 10 MiB history (written tick by tick) after reopening the database. */
  attach10MiB: { firstMs: number; medianMs: number; bytes: number; storedRatio: number };
  /** SqliteStore.open of the resulting database (lock, quick_check, migrations). */
  openMs: number;
}

export interface CodecFigures {
  codec: string;
  rowKiB: number;
  ratio: number;
  compressMsPerMB: number;
  decompressMsPerMB: number;
}

export interface FlushFigures {
  sessions: number;
  bytesPerTick: number;
  /** Event-loop time of a flush: taking the batch and the transaction (all of it when the store compresses on the loop). */
  mainP50Ms: number;
  mainP99Ms: number;
  mainMaxMs: number;
  /** Start of the flush to its commit, the wait for the compression worker included. */
  endToEndP50Ms: number;
  endToEndP99Ms: number;
  endToEndMaxMs: number;
  /** perf_hooks.monitorEventLoopDelay over the whole run: the loop's own view of what blocked it (appends included). */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /** Raw output bytes / bytes in the output table, once the run's compactions have come back. */
  storedRatio: number;
  databaseMB: number;
}

/** A PTY session flushes once a second; the bench runs ten times faster, so background work (compaction, checkpoints) weighs ten times more. */
const TICK_MS = 100;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const round = (n: number, digits = 2): number => Number(n.toFixed(digits));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function session(id: string, now: number): SessionRecord {
  return {
    id, agent: 'claude', projectPath: '/home/dev/project', state: 'busy', pid: 1000, pidStartTime: 1, tag: id,
    agentSessionId: null, createdAt: now, lastActivityAt: now, expiresAt: null, warnedAt: null, endedAt: null,
    cols: 120, rows: 40, exitCode: null, signal: null, endReason: null, deviceToken: null, outputBytes: 0,
  };
}

function brotli(quality: number, rowBytes: number): BrotliOptions {
  return { params: { [constants.BROTLI_PARAM_QUALITY]: quality, [constants.BROTLI_PARAM_LGWIN]: Math.max(16, Math.ceil(Math.log2(rowBytes))), [constants.BROTLI_PARAM_SIZE_HINT]: rowBytes } };
}

function measureCompression(data: Buffer): CodecFigures[] {
  const mb = data.length / (1024 * 1024);
  const codecs: Array<[string, number, (b: Buffer) => Buffer, (b: Buffer) => Buffer]> = [
    ['gzip 1 (schema 1)', 64, (b) => gzipSync(b, { level: 1 }), gunzipSync],
    ['gzip 6', 64, (b) => gzipSync(b, { level: 6 }), gunzipSync],
    ['gzip 6', 256, (b) => gzipSync(b, { level: 6 }), gunzipSync],
    ['brotli 1 (pieces)', 16, (b) => brotliCompressSync(b, brotli(1, 16 * 1024)), brotliDecompressSync],
    ['brotli 5', 64, (b) => brotliCompressSync(b, brotli(5, 64 * 1024)), brotliDecompressSync],
    ['brotli 5', 256, (b) => brotliCompressSync(b, brotli(5, 256 * 1024)), brotliDecompressSync],
    ['brotli 6 (segments)', 256, (b) => brotliCompressSync(b, brotli(6, 256 * 1024)), brotliDecompressSync],
    ['brotli 6', 1024, (b) => brotliCompressSync(b, brotli(6, 1024 * 1024)), brotliDecompressSync],
  ];
  return codecs.map(([codec, rowKiB, pack, unpack]) => {
    const chunk = rowKiB * 1024;
    const packed: Buffer[] = [];
    let t = performance.now();
    for (let o = 0; o < data.length; o += chunk) packed.push(pack(data.subarray(o, o + chunk)));
    const compressMs = performance.now() - t;
    t = performance.now();
    for (const p of packed) unpack(p);
    const decompressMs = performance.now() - t;
    const size = packed.reduce((n, p) => n + p.length, 0);
    return { codec, rowKiB, ratio: round(data.length / size), compressMsPerMB: round(compressMs / mb), decompressMsPerMB: round(decompressMs / mb) };
  });
}

interface FlushTimes {
  main: number[];
  total: number[];
}

/**
 * A store that flushes the way the daemon's timer does. A store without
 * `flushAsync` (schema 1, for comparison runs) is flushed synchronously and
 * its whole flush counts as event-loop time.
 */
function openTimed(dataDir: string, times: FlushTimes | null): { store: SqliteStore; flush: () => Promise<boolean> } {
  const store = SqliteStore.open({
    dataDir,
    flushIntervalMs: 3_600_000,
    onFlush: (s: FlushStats) => {
      if (s.mode !== 'tick' || !times) return;
      times.main.push(s.mainMs);
      times.total.push(s.totalMs);
    },
  } as SqliteStoreOptions);
  const timed = store as unknown as { flushAsync?: () => Promise<boolean> };
  if (typeof timed.flushAsync === 'function') return { store, flush: () => (timed.flushAsync as () => Promise<boolean>).call(store) };
  return {
    store,
    flush: async () => {
      const t = performance.now();
      const ok = store.flush() as boolean;
      const ms = performance.now() - t;
      times?.main.push(ms);
      times?.total.push(ms);
      return ok;
    },
  };
}

/** Waits for the store's background compactions (a store of schema 1 has none). */
async function settled(store: SqliteStore): Promise<void> {
  const s = store as unknown as { compactionsSettled?: () => Promise<void> };
  if (typeof s.compactionsSettled === 'function') await s.compactionsSettled.call(store);
}

/** Output bytes of a database and the bytes its output table holds them in. */
function storedBytes(dataDir: string, session?: string): { raw: number; stored: number } {
  const db = new Database(join(dataDir, 'agentd.db'), { readonly: true, fileMustExist: true });
  try {
    const where = session ? 'WHERE session_id = ?' : '';
    const row = db.prepare(`SELECT sum(end_offset - start_offset) raw, sum(length(data)) stored FROM output ${where}`).get(...(session ? [session] : [])) as { raw: number; stored: number };
    return row;
  } finally {
    db.close();
  }
}

/** Streams `bytesPerTick` per session per tick for TICKS ticks, one tick every TICK_MS, and times each flush. */
async function measureFlushes(dataDir: string, source: Buffer, bytesPerTick: number): Promise<FlushFigures & { appendUs: number }> {
  const times: FlushTimes = { main: [], total: [] };
  const { store, flush } = openTimed(dataDir, times);
  const now = Date.now();
  const offsets = new Array<number>(SESSIONS).fill(0);
  for (let s = 0; s < SESSIONS; s++) store.putSession(session(`s${s}`, now));
  store.flush();
  let appendMs = 0;
  let appends = 0;
  let cursor = 0;
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const started = performance.now();
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
    await flush();
    await sleep(Math.max(0, started + (tick + 1) * TICK_MS - performance.now()));
  }
  loop.disable();
  // As stored once the compactions under way are in, as they would be a tick or two later.
  await settled(store);
  const { raw, stored } = storedBytes(dataDir);
  store.close();
  const main = times.main.slice(2).sort((a, b) => a - b); // the first ticks warm the statement cache and the WAL
  const total = times.total.slice(2).sort((a, b) => a - b);
  return {
    sessions: SESSIONS,
    bytesPerTick: bytesPerTick * SESSIONS,
    mainP50Ms: round(percentile(main, 50)),
    mainP99Ms: round(percentile(main, 99)),
    mainMaxMs: round(main[main.length - 1]),
    endToEndP50Ms: round(percentile(total, 50)),
    endToEndP99Ms: round(percentile(total, 99)),
    endToEndMaxMs: round(total[total.length - 1]),
    loopDelayP99Ms: round(loop.percentile(99) / 1e6),
    loopDelayMaxMs: round(loop.max / 1e6),
    storedRatio: round(raw / stored),
    databaseMB: round(statSync(join(dataDir, 'agentd.db')).size / (1024 * 1024)),
    appendUs: round((appendMs / appends) * 1000),
  };
}

/** Writes `history` to one session 64 KiB a tick, reopens, and times reading it all back. */
async function measureAttach(dataDir: string, history: Buffer): Promise<{ attach: PersistBenchResult['attach10MiB']; openMs: number }> {
  const { store: writer, flush } = openTimed(dataDir, null);
  for (let o = 0; o < history.length; o += 64 * 1024) {
    for (let r = o; r < Math.min(history.length, o + 64 * 1024); r += READ_BYTES) writer.appendOutput('big', r, history.subarray(r, r + READ_BYTES));
    await flush();
  }
  await settled(writer);
  writer.close();
  const { raw, stored } = storedBytes(dataDir, 'big');
  let t = performance.now();
  const store = SqliteStore.open({ dataDir });
  const openMs = performance.now() - t;
  const reads: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 7; i++) {
    t = performance.now();
    bytes = store.readOutput('big', 0)?.data.length ?? 0;
    reads.push(performance.now() - t);
  }
  store.close();
  return {
    attach: { firstMs: round(reads[0]), medianMs: round(reads.slice().sort((a, b) => a - b)[3]), bytes, storedRatio: round(raw / stored) },
    openMs: round(openMs),
  };
}

export async function run(): Promise<PersistBenchResult> {
  const root = mkdtempSync(join(tmpdir(), 'agentd-bench-persist-'));
  try {
    const history = agentLikeOutput(HISTORY_BYTES, 7);
    const compression = measureCompression(history);
    const streaming = await measureFlushes(join(root, 'streaming'), history, 16 * 1024);
    const quiet = await measureFlushes(join(root, 'quiet'), history, 1024);
    const { attach, openMs } = await measureAttach(join(root, 'attach'), history);
    const { appendUs, ...streamingFigures } = streaming;
    const { appendUs: _quietAppend, ...quietFigures } = quiet;
    void _quietAppend;
    return { compression, streaming: streamingFigures, quiet: quietFigures, appendUsPerCall: appendUs, attach10MiB: attach, openMs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function flushLine(name: string, f: FlushFigures): string {
  return `  ${name} (${(f.bytesPerTick / 1024 / 1024).toFixed(2)} MiB/tick): event loop p50 ${f.mainP50Ms} ms, p99 ${f.mainP99Ms} ms, max ${f.mainMaxMs} ms; ` +
    `end to end p50 ${f.endToEndP50Ms} ms, p99 ${f.endToEndP99Ms} ms, max ${f.endToEndMaxMs} ms; loop delay p99 ${f.loopDelayP99Ms} ms, max ${f.loopDelayMaxMs} ms; ` +
    `stored ${f.storedRatio}x, database ${f.databaseMB} MB`;
}

function print(r: PersistBenchResult): void {
  const lines = [
    `persist: ${SESSIONS} sessions, ${TICKS} ticks ${TICK_MS} ms apart, one transaction per tick`,
    flushLine('16 KiB/tick each', r.streaming),
    flushLine(' 1 KiB/tick each', r.quiet),
    `  appendOutput: ${r.appendUsPerCall} µs per 4 KiB call`,
    `  attach to 10 MiB of history after reopen: first read ${r.attach10MiB.firstMs} ms, median ${r.attach10MiB.medianMs} ms (${r.attach10MiB.bytes} bytes, stored ${r.attach10MiB.storedRatio}x)`,
    `  open with quick_check: ${r.openMs} ms`,
    `  codecs on agent-like output:`,
    ...r.compression.map((c) => `    ${c.codec.padEnd(20)} ${String(c.rowKiB).padStart(4)} KiB rows: ${String(c.ratio).padStart(5)}x, ${c.compressMsPerMB} ms/MB in, ${c.decompressMsPerMB} ms/MB out`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (require.main === module) {
  run().then(print, (err) => {
    process.stderr.write(`bench persist failed: ${(err as Error).stack}\n`);
    process.exit(1);
  });
}
