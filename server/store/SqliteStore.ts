import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import type { Event } from '../common/events';
import type { Logger } from '../common/log';
import { DEFAULT_CODEC, unpackSnapshot } from './codec';
import { BatchWriter, type FlushStats, type WriteQueue } from './BatchWriter';
import { Compactor } from './Compactor';
import { CompressionWorkers } from './CompressionWorkers';
import { DB_FILE, openDatabase, type Recovery } from './database';
import { DataDirLock } from './lock';
import { findMigrationsDir, readMigrations } from './migrate';
import { readChunks } from './outputChunks';
import { InlinePacker } from './packer';
import { SessionOutput } from './SessionOutput';
import type {
  OutputSlice,
  ScreenSnapshot,
  SessionEvent,
  SessionRecord,
  SessionStore,
  StoreHealth,
  TurnRecord,
} from './SessionStore';
import { prepareStatements, type Statements } from './statements';

// Where it was first declared, for the callers that import it from here.
export type { FlushStats } from './BatchWriter';

export interface SqliteStoreOptions {
  /** Directory of `agentd.db` and `agentd.lock`; created (mode 0700) if missing. */
  dataDir: string;
  /** Output kept per session; older rows are dropped whole, so a little more may stay. Default 50 MiB. */
  maxHistoryBytes?: number;
  /** Queued writes are flushed this often. Default 1000 ms. */
  flushIntervalMs?: number;
  /**
   * A session with this much output queued triggers a flush on the next turn
   * of the event loop; also the largest row a flush writes. Default 256 KiB.
   */
  chunkBytes?: number;
  /**
   * A session's flushed rows are recompressed together once they hold this
   * much (or the session goes quiet); compacted rows hold this to twice this.
   * Default 256 KiB, at most a quarter of `maxHistoryBytes`.
   */
  segmentBytes?: number;
  /** A session with no output for this long has its uncompacted rows compacted. Default 5000 ms. */
  quietMs?: number;
  /** Compress in a worker thread (default). False: on the event loop and libuv's pool, as when no worker can start. */
  compressInWorker?: boolean;
  /** Snapshots kept per session, newest by offset. Default 3. */
  snapshotsKept?: number;
  /** How long a statement waits for a lock held by another connection (blocking the event loop). Default 500 ms. */
  busyTimeoutMs?: number;
  /** Called inside every flush transaction before it commits; throwing fails the flush (tests inject disk errors). */
  faultInjector?: () => void;
  /** Told about every flush that wrote something: what it cost the event loop and how long it took. */
  onFlush?: (stats: FlushStats) => void;
  log?: Logger;
}

const DEFAULT_MAX_HISTORY_BYTES = 50 * 1024 * 1024; // config's maxSessionHistoryMB default
const FLUSH_INTERVAL_MS = 1000; // at most a second of output lost if the daemon dies
const CHUNK_BYTES = 256 * 1024;
/**
 * brotli gets 9.4x on agent-like output from 256 KiB rows (quality 6), 5.4x
 * from the 16 KiB a busy session flushes per tick (quality 1): a flush writes
 * fast pieces, compaction later rewrites them as segments (bench/persist.ts).
 */
const SEGMENT_BYTES = 256 * 1024;
const QUIET_MS = 5000;
const SNAPSHOTS_KEPT = 3;
/**
 * Only this daemon writes the database (the lock file sees to that), so a
 * wait means someone's sqlite3 shell holds a write lock. better-sqlite3 waits
 * synchronously, freezing every terminal: better to fail the flush soon and
 * retry on the next tick, degraded.
 */
const BUSY_TIMEOUT_MS = 500;

/**
 * The session store on one SQLite database in WAL mode. Writes are queued in
 * memory and committed by a batched writer, all sessions in one transaction,
 * every `flushIntervalMs` or as soon as a session has a full chunk queued;
 * reads merge what is on disk with what is queued.
 *
 * A flush on the timer takes the queued output and snapshots, has a
 * compression worker pack them (the event loop only copies the bytes over),
 * then commits the packed rows: the event loop's share is little more than
 * the transaction. `flush()` does the same at once, packing on the event
 * loop. Rows a flush writes ("pieces") are compressed fast; a second worker
 * later reads each session's pieces back on its own connection, recompresses
 * them as larger segments, which a later commit swaps in, and checkpoints
 * the WAL. A failed flush (disk full, I/O error) rolls back, keeps its
 * batch and is retried on the next tick while `health()` reports degraded.
 */
export class SqliteStore implements SessionStore {
  /** Set when the database found at open was damaged and moved aside; log it loudly. */
  readonly recovered?: Recovery;
  readonly file: string;

  private readonly db: Database.Database;
  private readonly stmts: Statements;
  private readonly lock: DataDirLock;
  private readonly maxHistoryBytes: number;
  private readonly snapshotsKept: number;
  private readonly log?: Logger;

  private readonly compression: CompressionWorkers;
  private readonly compactor: Compactor;
  private readonly writer: BatchWriter;

  private readonly outputs = new Map<string, SessionOutput>();
  private readonly queued: WriteQueue = {
    deletes: new Set<string>(),
    sessions: new Map<string, SessionRecord>(),
    turns: new Map<string, TurnRecord>(),
    events: [],
    snapshots: [],
  };
  private closed = false;

  /** Fires when health changes (degraded on a failed flush, ok after a retry succeeds). */
  readonly onHealthChange: Event<StoreHealth>;

  static open(options: SqliteStoreOptions): SqliteStore {
    return new SqliteStore(options);
  }

  /** Takes the data directory's lock, opens (or recovers) the database and migrates it. */
  constructor(options: SqliteStoreOptions) {
    this.maxHistoryBytes = positive(options.maxHistoryBytes, DEFAULT_MAX_HISTORY_BYTES, 'maxHistoryBytes');
    const flushIntervalMs = positive(options.flushIntervalMs, FLUSH_INTERVAL_MS, 'flushIntervalMs');
    const chunkBytes = positive(options.chunkBytes, CHUNK_BYTES, 'chunkBytes');
    const segmentBytes = Math.max(1, Math.min(positive(options.segmentBytes, SEGMENT_BYTES, 'segmentBytes'), Math.floor(this.maxHistoryBytes / 4)));
    const quietMs = positive(options.quietMs, QUIET_MS, 'quietMs');
    this.snapshotsKept = positive(options.snapshotsKept, SNAPSHOTS_KEPT, 'snapshotsKept');
    this.log = options.log;
    const codec = DEFAULT_CODEC;
    // Packs for `flush()`, and for everything when no worker runs.
    const inline = new InlinePacker(codec);

    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    this.file = path.join(options.dataDir, DB_FILE);
    this.lock = DataDirLock.acquire(options.dataDir);
    try {
      const migrations = readMigrations(findMigrationsDir());
      const opened = openDatabase(this.file, migrations, { busyTimeoutMs: options.busyTimeoutMs ?? BUSY_TIMEOUT_MS });
      this.db = opened.db;
      this.recovered = opened.recovered;
      this.stmts = prepareStatements(this.db);
    } catch (err) {
      this.lock.release();
      throw err;
    }
    if (this.recovered) {
      this.log?.error({ movedTo: this.recovered.movedTo, reason: this.recovered.reason }, 'database was damaged: moved aside, started a fresh one');
    }

    const { db, stmts, file, outputs, queued, log } = this;
    this.compression = new CompressionWorkers({ db, file, codec, inline, enabled: options.compressInWorker !== false, log });
    this.compactor = new Compactor({
      file, stmts, inline, workers: this.compression, outputs, segmentBytes, quietMs, log,
      onCompacted: () => this.writer.scheduleTick(),
    });
    this.writer = new BatchWriter({
      db, stmts, queued, outputs, codec, inline, workers: this.compression, compactor: this.compactor,
      maxHistoryBytes: this.maxHistoryBytes, flushIntervalMs, chunkBytes, quietMs, snapshotsKept: this.snapshotsKept,
      faultInjector: options.faultInjector, onFlush: options.onFlush, log,
    });
    this.onHealthChange = this.writer.onHealthChange;
  }

  // ── sessions ────────────────────────────────────────────────────────────

  listSessions(): SessionRecord[] {
    const byId = new Map<string, SessionRecord>();
    for (const row of this.stmts.listSessions.all()) if (!this.queued.deletes.has(row.id)) byId.set(row.id, row);
    for (const record of this.queued.sessions.values()) byId.set(record.id, record);
    return [...byId.values()]
      .map((r) => this.withOutputBytes(r))
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  getSession(id: string): SessionRecord | undefined {
    const queued = this.queued.sessions.get(id);
    if (queued) return this.withOutputBytes(queued);
    if (this.queued.deletes.has(id)) return undefined;
    const row = this.stmts.getSession.get(id);
    return row && this.withOutputBytes(row);
  }

  putSession(record: SessionRecord): void {
    this.assertOpen();
    this.queued.sessions.set(record.id, { ...record });
    this.writer.scheduleTick();
  }

  /** Queues the removal of the session and everything of it; reads stop seeing it at once. */
  deleteSession(id: string): void {
    this.assertOpen();
    this.queued.deletes.add(id);
    this.queued.sessions.delete(id);
    for (const [turnId, turn] of this.queued.turns) if (turn.sessionId === id) this.queued.turns.delete(turnId);
    this.queued.events = this.queued.events.filter((e) => e.sessionId !== id);
    this.queued.snapshots = this.queued.snapshots.filter((q) => q.snapshot.sessionId !== id);
    // A new object: whatever the packer still returns for the old one is dropped.
    this.outputs.set(id, SessionOutput.empty());
    this.writer.scheduleTick();
  }

  /**
   * Removes the sessions that ended more than `olderThanMs` before `nowMs`,
   * with all their rows, then checkpoints the WAL so the space is reusable.
   * Returns how many were removed.
   */
  pruneEnded(olderThanMs: number, nowMs: number): number {
    this.assertOpen();
    const cutoff = nowMs - olderThanMs;
    const ended = this.listSessions().filter((s) => s.endedAt !== null && s.endedAt < cutoff);
    for (const s of ended) this.deleteSession(s.id);
    this.flush();
    this.checkpoint();
    return ended.length;
  }

  // ── output ──────────────────────────────────────────────────────────────

  appendOutput(sessionId: string, offset: number, data: Buffer): void {
    // Late pty data after close (shutdown order) must not crash the output path; it has nowhere to go.
    if (this.closed || data.length === 0) return;
    const output = this.outputOf(sessionId);
    const { gap } = output.append(offset, data, this.maxHistoryBytes, Date.now());
    if (gap) this.log?.warn({ sessionId, offset }, 'output gap: history before it is dropped');
    this.writer.outputAppended(output);
  }

  readOutput(sessionId: string, from: number, to?: number): OutputSlice | null {
    const output = this.outputOf(sessionId, false);
    if (from < output.start) return null;
    const stop = Math.min(to ?? output.end, output.end);
    if (from >= stop) return { offset: from, data: Buffer.alloc(0) };
    // Disk up to storedEnd; newer bytes are in memory.
    const inMemory = output.storedEnd;
    const parts: Buffer[] = [];
    if (from < inMemory) parts.push(...readChunks(this.stmts, sessionId, from, Math.min(stop, inMemory)));
    if (stop > inMemory) parts.push(...output.memorySlices(Math.max(from, inMemory), stop));
    return { offset: from, data: parts.length === 1 ? parts[0] : Buffer.concat(parts) };
  }

  outputRange(sessionId: string): { start: number; end: number } {
    const output = this.outputOf(sessionId, false);
    return { start: output.start, end: output.end };
  }

  // ── snapshots, events, turns ────────────────────────────────────────────

  putSnapshot(snapshot: ScreenSnapshot): void {
    this.assertOpen();
    this.queued.snapshots.push({ snapshot: { ...snapshot }, data: null, sent: false });
    // While the disk lags, keep only as many queued screens as would be kept on disk (each can be a megabyte).
    const mine = this.queued.snapshots.filter((q) => q.snapshot.sessionId === snapshot.sessionId);
    if (mine.length > this.snapshotsKept) {
      const oldest = mine.reduce((a, b) => (b.snapshot.offset < a.snapshot.offset ? b : a));
      this.queued.snapshots.splice(this.queued.snapshots.indexOf(oldest), 1);
    }
    this.writer.scheduleTick();
  }

  latestSnapshot(sessionId: string, atOrBefore = Number.MAX_SAFE_INTEGER): ScreenSnapshot | undefined {
    let best: ScreenSnapshot | undefined;
    for (const { snapshot: s } of this.queued.snapshots) {
      if (s.sessionId === sessionId && s.offset <= atOrBefore && (!best || s.offset >= best.offset)) best = s;
    }
    if (this.queued.deletes.has(sessionId)) return best && { ...best };
    const row = this.stmts.latestSnapshot.get(sessionId, atOrBefore);
    if (row && (!best || row.offset > best.offset)) {
      return { sessionId, offset: row.offset, cols: row.cols, rows: row.rows, createdAt: row.createdAt, data: unpackSnapshot(row.data) };
    }
    return best && { ...best };
  }

  addEvent(event: SessionEvent): void {
    this.assertOpen();
    this.queued.events.push({ sessionId: event.sessionId, type: event.type, at: event.at, detail: event.detail === null ? null : JSON.stringify(event.detail) });
    this.writer.scheduleTick();
  }

  listEvents(sessionId: string): SessionEvent[] {
    const rows = this.queued.deletes.has(sessionId) ? [] : this.stmts.listEvents.all(sessionId);
    rows.push(...this.queued.events.filter((e) => e.sessionId === sessionId));
    return rows
      .map((row) => ({ ...row, detail: row.detail === null ? null : (JSON.parse(row.detail) as Record<string, unknown>) }))
      .sort((a, b) => a.at - b.at); // stable: equal times keep the order they were added in
  }

  putTurn(turn: TurnRecord): void {
    this.assertOpen();
    this.queued.turns.set(turn.id, { ...turn });
    this.writer.scheduleTick();
  }

  listTurns(sessionId: string): TurnRecord[] {
    const stored = this.queued.deletes.has(sessionId) ? [] : this.stmts.listTurns.all(sessionId);
    const byId = new Map(stored.map((t) => [t.id, t]));
    for (const t of this.queued.turns.values()) if (t.sessionId === sessionId) byId.set(t.id, { ...t });
    return [...byId.values()].sort((a, b) => a.startedAt - b.startedAt);
  }

  // ── the writer ──────────────────────────────────────────────────────────

  /**
   * Writes everything queued now, in one transaction, compressing on the
   * event loop what the worker has not packed yet. Never throws on a write
   * error: the transaction rolls back, the batch stays queued for the next
   * tick, and `health()` says why. Returns whether everything is on disk.
   */
  flush(): boolean {
    return this.writer.flush();
  }

  /**
   * Flushes the way the timer does: the worker packs, then one transaction
   * commits. Resolves once what was queued when called is committed (true)
   * or the commit failed (false, kept for the next tick). A call while one
   * runs is served by one more round after it.
   */
  flushAsync(opts: { wholeRows?: boolean } = {}): Promise<boolean> {
    return this.writer.flushAsync(opts);
  }

  /**
   * Resolves once the compactions under way have come back and are swapped
   * in, with those that the flushes this needs start in turn (benches and
   * tests; the daemon never waits for compaction).
   */
  async compactionsSettled(): Promise<void> {
    await this.compactor.settled(() => this.flushAsync());
  }

  /** `worker` once the compression workers run, `inline` without them, `none yet` before the first timed flush. */
  get packerName(): 'worker' | 'inline' | 'none yet' {
    const workers = this.compression.state;
    return workers === null ? 'none yet' : workers === 'inline' ? 'inline' : 'worker';
  }

  health(): StoreHealth {
    return this.writer.health();
  }

  /** Moves the WAL into the database and truncates it. Returns false if SQLite could not (logged). */
  checkpoint(): boolean {
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
      return true;
    } catch (err) {
      // A checkpoint is housekeeping: the WAL stays valid and is retried by SQLite's auto-checkpoint.
      this.log?.warn({ err }, 'WAL checkpoint failed');
      return false;
    }
  }

  /** `PRAGMA integrity_check`: "ok", or SQLite's list of problems, one per line. */
  integrityCheck(): string {
    return (this.db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('\n');
  }

  /** Flushes, checkpoints, closes the database and releases the data directory. Idempotent. */
  close(): void {
    if (this.closed) return;
    if (!this.flush()) this.log?.error({ health: this.health() }, 'closing with writes that could not be flushed: they are lost');
    this.closed = true;
    this.writer.close();
    // Compactions still at the worker are dropped: their rows stay as they are, readable.
    this.compactor.dispose();
    this.compression.dispose();
    this.checkpoint();
    this.db.close();
    this.lock.release();
  }

  dispose(): void {
    this.close();
  }

  /**
   * The session's output state, read from disk on first use. Reads of a
   * session without output (`keep` false) leave nothing behind, so asking
   * about unknown ids does not grow the map.
   */
  private outputOf(sessionId: string, keep = true): SessionOutput {
    let output = this.outputs.get(sessionId);
    if (!output) {
      const first = this.stmts.firstChunk.get(sessionId);
      const last = this.stmts.lastChunk.get(sessionId);
      // Rows written before a restart that were never compacted are compacted from disk, in the background.
      const settled = first && last ? this.stmts.lastSettledEnd.get(sessionId) : undefined;
      output = first && last ? new SessionOutput(first.start, last.end, settled?.end ?? first.start) : SessionOutput.empty();
      if (keep || first) this.outputs.set(sessionId, output);
    }
    return output;
  }

  private withOutputBytes(record: SessionRecord): SessionRecord {
    const end = this.outputs.get(record.id)?.end ?? 0;
    return { ...record, outputBytes: Math.max(record.outputBytes, end) };
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the session store at ${this.file} is closed`);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`SqliteStore option ${name} must be a positive number, got ${value}`);
  return value;
}
