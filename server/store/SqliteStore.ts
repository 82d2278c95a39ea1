import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { Emitter, type Event } from '../common/events';
import type { Logger } from '../common/log';
import { DEFAULT_CODEC, packSnapshot, unpackSnapshot, type CodecSettings } from './codec';
import { DB_FILE, openDatabase, type Recovery } from './database';
import { DataDirLock } from './lock';
import { findMigrationsDir, readMigrations } from './migrate';
import { pickCompactionRun, readChunks, writeOutput } from './outputChunks';
import { CompressWorker, compressWorkerPath, InlinePacker, type PackInput, type Packed, type Packer, type RecompactResult } from './packer';
import type { RecompactJob } from './packerProtocol';
import { SessionOutput, type Compaction } from './SessionOutput';
import type {
  OutputSlice,
  ScreenSnapshot,
  SessionEvent,
  SessionRecord,
  SessionStore,
  StoreHealth,
  TurnRecord,
} from './SessionStore';
import { prepareStatements, type EventRow, type Statements } from './statements';

export interface SqliteStoreOptions {
  /** Directory of `agentd.db` and `agentd.lock`; created (mode 0700) if missing. */
  dataDir: string;
  /** Output kept per session; older rows are dropped whole, so a little more may stay. Default 50 MiB. */
  maxHistoryBytes?: number;
  /** Queued writes are flushed this often. Default 1000 ms. */
  flushIntervalMs?: number;
  /**
   * A session with this much output queued triggers a flush on the next turn
   * of the event loop; also the largest row a flush writes. Default 64 KiB.
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

export interface FlushStats {
  /** `tick`: the timer or a full chunk, packed off the event loop. `sync`: `flush()`, packed on it. */
  mode: 'tick' | 'sync';
  /** Event-loop time: taking the batch and posting it, then the transaction (and, for `sync`, compressing). */
  mainMs: number;
  /** Start to commit, the wait for the worker included. */
  totalMs: number;
  /** Taking the batch and handing it over (`sync`: compressing it). */
  prepareMs: number;
  /** The transaction alone. */
  commitMs: number;
  ok: boolean;
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
/** A tail of this many rows is compacted even if small: a spinner session would otherwise leave a sliver per tick. */
const MAX_TAIL_ROWS = 64;
/**
 * Compacted bytes swapped in per commit: all sessions of the bench reach a
 * segment on the same tick, and swapping 100 segments in at once took a
 * 10 ms commit. The rest waits for the next tick.
 */
const COMPACTED_BYTES_PER_COMMIT = 256 * 1024;
/** Bytes of pieces compaction is asked for per flush round: spreads a burst of full tails over several rounds (and the worker's time). */
const COMPACTION_BYTES_PER_ROUND = 4 * 1024 * 1024;
/** How long a flush waits for the worker before calling it broken and packing on the event loop. */
const FLUSH_WORKER_TIMEOUT_MS = 5000;
/**
 * With the workers running, the background one checkpoints the WAL after
 * about this many bytes were committed (SQLite's own default is 1000 pages),
 * so the copy into the database and its fsync never run in a commit on the
 * event loop (they cost 10-40 ms there). SQLite still checkpoints by itself,
 * on the event loop, if the WAL ever reaches BACKSTOP_CHECKPOINT_PAGES.
 */
const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** Niceness of the background worker's thread: compaction and checkpoints take the cores only when the event loop leaves them. */
const BACKGROUND_NICE = 10;
const BACKSTOP_CHECKPOINT_PAGES = 16384;
const SNAPSHOTS_KEPT = 3;
/**
 * Only this daemon writes the database (the lock file sees to that), so a
 * wait means someone's sqlite3 shell holds a write lock. better-sqlite3 waits
 * synchronously, freezing every terminal: better to fail the flush soon and
 * retry on the next tick, degraded.
 */
const BUSY_TIMEOUT_MS = 500;

interface QueuedSnapshot {
  snapshot: ScreenSnapshot;
  /** gzip, once packed. */
  data: Buffer | null;
  /** Handed to the packer. */
  sent: boolean;
}

/** What one flush handed to the packer, item by item. */
type JobEntry =
  | { id: string; output: SessionOutput; epoch: number; start: number; end: number }
  | { queued: QueuedSnapshot };

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
  private readonly flushIntervalMs: number;
  private readonly chunkBytes: number;
  private readonly segmentBytes: number;
  private readonly quietMs: number;
  private readonly snapshotsKept: number;
  private readonly faultInjector?: () => void;
  private readonly onFlush?: (stats: FlushStats) => void;
  private readonly log?: Logger;

  private readonly codec: CodecSettings = DEFAULT_CODEC;
  /** Packs for `flush()`, and for everything when no worker runs. */
  private readonly inline: InlinePacker;
  /**
   * Started on the first timed flush: one packs flushes, the other compacts
   * and checkpoints. 'inline' when told not to use them or they could not run.
   */
  private workers: { flush: CompressWorker; background: CompressWorker } | 'inline' | null;
  private checkpointing = false;
  /** Compaction requests at the background worker. */
  private readonly compacting = new Set<Promise<void>>();
  /** Bytes committed since the last checkpoint the background worker was asked for (an estimate). */
  private uncheckpointedBytes = 0;

  private readonly outputs = new Map<string, SessionOutput>();
  private readonly queued = {
    deletes: new Set<string>(),
    sessions: new Map<string, SessionRecord>(),
    turns: new Map<string, TurnRecord>(),
    /** `detail` already as JSON, so a queued event reads back exactly as a stored one. */
    events: [] as EventRow[],
    snapshots: [] as QueuedSnapshot[],
  };
  private tickTimer: NodeJS.Timeout | null = null;
  private quietTimer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  /** The timed flush under way, and the one asked for while it runs. */
  private running: Promise<boolean> | null = null;
  private rerun: Promise<boolean> | null = null;
  /** The round queued in `rerun` takes every byte (some caller wanted everything), not only full rows. */
  private rerunTakesAll = false;
  private failure: { message: string; count: number; since: number } | null = null;
  private readonly healthEmitter = new Emitter<StoreHealth>();
  private closed = false;

  /** Fires when health changes (degraded on a failed flush, ok after a retry succeeds). */
  readonly onHealthChange: Event<StoreHealth> = this.healthEmitter.event;

  static open(options: SqliteStoreOptions): SqliteStore {
    return new SqliteStore(options);
  }

  /** Takes the data directory's lock, opens (or recovers) the database and migrates it. */
  constructor(options: SqliteStoreOptions) {
    this.maxHistoryBytes = positive(options.maxHistoryBytes, DEFAULT_MAX_HISTORY_BYTES, 'maxHistoryBytes');
    this.flushIntervalMs = positive(options.flushIntervalMs, FLUSH_INTERVAL_MS, 'flushIntervalMs');
    this.chunkBytes = positive(options.chunkBytes, CHUNK_BYTES, 'chunkBytes');
    this.segmentBytes = Math.max(1, Math.min(positive(options.segmentBytes, SEGMENT_BYTES, 'segmentBytes'), Math.floor(this.maxHistoryBytes / 4)));
    this.quietMs = positive(options.quietMs, QUIET_MS, 'quietMs');
    this.snapshotsKept = positive(options.snapshotsKept, SNAPSHOTS_KEPT, 'snapshotsKept');
    this.workers = options.compressInWorker === false ? 'inline' : null;
    this.faultInjector = options.faultInjector;
    this.onFlush = options.onFlush;
    this.log = options.log;
    this.inline = new InlinePacker(this.codec);

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
    this.scheduleTick();
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
    this.scheduleTick();
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
    this.scheduleTick();
    // A full chunk is ready: write it soon, but never inside the caller's call. Not while degraded: retries wait for the tick.
    if (output.end - output.sentEnd >= this.chunkBytes && !this.immediate && !this.failure) {
      this.immediate = setImmediate(() => {
        this.immediate = null;
        void this.flushAsync({ wholeRows: true });
      });
    }
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
    this.scheduleTick();
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
    this.scheduleTick();
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
    this.scheduleTick();
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
    if (this.closed) return true;
    if (this.immediate) {
      clearImmediate(this.immediate);
      this.immediate = null;
    }
    const started = performance.now();
    this.packAllNow();
    const beforeCommit = performance.now();
    const ok = this.commit();
    const done = performance.now();
    if (ok !== null) this.onFlush?.({ mode: 'sync', mainMs: done - started, totalMs: done - started, prepareMs: beforeCommit - started, commitMs: done - beforeCommit, ok });
    return ok ?? true;
  }

  /**
   * Flushes the way the timer does: the worker packs, then one transaction
   * commits. Resolves once what was queued when called is committed (true)
   * or the commit failed (false, kept for the next tick). A call while one
   * runs is served by one more round after it.
   */
  flushAsync(opts: { wholeRows?: boolean } = {}): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    const wholeRows = opts.wholeRows === true;
    // Rounds never overlap: callers while one runs share the next one (which takes everything if any of them wants it).
    if (this.rerun) {
      if (!wholeRows) this.rerunTakesAll = true;
      return this.rerun;
    }
    if (!this.running) return this.startRound(wholeRows);
    this.rerunTakesAll = !wholeRows;
    this.rerun = this.running.then(() => {
      this.rerun = null;
      return this.closed ? true : this.startRound(!this.rerunTakesAll);
    });
    return this.rerun;
  }

  /** `worker` once the compression workers run, `inline` without them, `none yet` before the first timed flush. */
  get packerName(): 'worker' | 'inline' | 'none yet' {
    return this.workers === null ? 'none yet' : this.workers === 'inline' ? 'inline' : 'worker';
  }

  health(): StoreHealth {
    if (!this.failure) return { status: 'ok' };
    const queued = [...this.outputs.values()].reduce((n, o) => n + o.pendingBytes, 0);
    const others = this.queued.sessions.size + this.queued.deletes.size + this.queued.turns.size + this.queued.events.length + this.queued.snapshots.length;
    return {
      status: 'degraded',
      detail: `${this.failure.message}: ${this.failure.count} failed flush(es) since ${new Date(this.failure.since).toISOString()}; ` +
        `${queued} bytes of output and ${others} other writes kept in memory, retried every ${this.flushIntervalMs} ms`,
    };
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
    for (const timer of [this.tickTimer, this.quietTimer]) if (timer) clearTimeout(timer);
    this.tickTimer = this.quietTimer = null;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = null;
    // Compactions still at the worker are dropped: their rows stay as they are, readable.
    this.stopWorkers();
    this.checkpoint();
    this.db.close();
    this.lock.release();
    this.healthEmitter.dispose();
  }

  dispose(): void {
    this.close();
  }

  private startRound(wholeRows: boolean): Promise<boolean> {
    // flushRound starts now (it takes the queue synchronously) and, being async, settles later: `round` is set by then.
    let round: Promise<boolean> | undefined;
    round = (async (): Promise<boolean> => {
      try {
        return await this.flushRound(wholeRows);
      } catch (err) {
        this.log?.error({ err }, 'store flush round failed');
        return false;
      } finally {
        if (this.running === round) this.running = null;
      }
    })();
    this.running = round;
    return round;
  }

  /**
   * One timed flush: take what is queued, have it packed off the event loop,
   * commit. `wholeRows` (a flush because a session filled a row): only full
   * rows are taken, the rest waits for the next row or the tick — a flood
   * then writes only full rows, which the probe settles on the event loop,
   * instead of a short remainder per round that goes to the worker and back.
   */
  private async flushRound(wholeRows: boolean): Promise<boolean> {
    const started = performance.now();
    const { entries, items } = this.takeUnpacked(wholeRows);
    this.planCompactions(Date.now());
    const pending = items.length > 0 ? this.packOffLoop(items) : null;
    // Up to here, handing over included (a postMessage), the event loop was busy.
    const prepareMs = performance.now() - started;
    let mainMs = prepareMs;
    if (pending) {
      const packed = await pending;
      if (this.closed) return true;
      const resumed = performance.now();
      this.applyPacked(entries, packed);
      mainMs += performance.now() - resumed;
    }
    const beforeCommit = performance.now();
    const ok = this.commit();
    const done = performance.now();
    mainMs += done - beforeCommit;
    if (ok !== null) this.onFlush?.({ mode: 'tick', mainMs, totalMs: done - started, prepareMs, commitMs: done - beforeCommit, ok });
    this.scheduleQuietCheck();
    return ok ?? true;
  }

  /** What is not yet handed to a packer: each session's new bytes in rows of at most `chunkBytes` (only full ones if `wholeRows`), and new snapshots. */
  private takeUnpacked(wholeRows = false): { entries: JobEntry[]; items: PackInput[] } {
    const entries: JobEntry[] = [];
    const items: PackInput[] = [];
    for (const [id, output] of this.outputs) {
      if (output.sentEnd >= output.end) continue;
      for (const row of output.takeUnsent(this.chunkBytes, wholeRows)) {
        entries.push({ id, output, epoch: output.epoch, start: row.start, end: row.end });
        items.push({ what: 'piece', parts: row.parts });
      }
    }
    for (const queued of this.queued.snapshots) {
      if (queued.sent || queued.data) continue;
      queued.sent = true;
      entries.push({ queued });
      items.push({ what: 'snapshot', parts: [Buffer.from(queued.snapshot.data, 'utf8')] });
    }
    return { entries, items };
  }

  /** Files what the packer returned; results for state that moved on since (a restart, a sync flush, a delete) are dropped. */
  private applyPacked(entries: JobEntry[], packed: Packed[] | null): void {
    entries.forEach((entry, i) => {
      if ('queued' in entry) {
        if (packed) entry.queued.data ??= packed[i].data;
        else entry.queued.sent = false;
        return;
      }
      if (this.outputs.get(entry.id) !== entry.output) return;
      if (packed) entry.output.addPacked({ start: entry.start, end: entry.end, kind: packed[i].kind, data: packed[i].data }, entry.epoch);
      else entry.output.unsend();
    });
  }

  /** Packs on the event loop whatever is not packed yet, including what the worker is still busy with (its answer will be stale). */
  private packAllNow(): void {
    for (const output of this.outputs.values()) {
      if (output.packedEnd >= output.end) continue;
      output.unsend();
      const rows = output.takeUnsent(this.chunkBytes);
      const packed = this.inline.packNow(rows.map((r) => ({ what: 'piece', parts: r.parts })));
      rows.forEach((r, i) => output.addPacked({ start: r.start, end: r.end, kind: packed[i].kind, data: packed[i].data }, output.epoch));
    }
    for (const queued of this.queued.snapshots) {
      if (queued.data) continue;
      // Level 1 here: this is on the event loop (the worker uses the codec's level).
      queued.data = packSnapshot(Buffer.from(queued.snapshot.data, 'utf8'), { ...this.codec, snapshotLevel: 1 });
      queued.sent = true;
    }
  }

  /** The workers, started on first use; null when they cannot run (then everything packs inline). */
  private startedWorkers(): { flush: CompressWorker; background: CompressWorker } | null {
    if (this.workers === 'inline') return null;
    if (this.workers) return this.workers;
    const file = compressWorkerPath();
    if (!file) {
      this.log?.warn('compression worker not built (run "npm run build"): compressing on the event loop');
      this.workers = 'inline';
      return null;
    }
    try {
      this.workers = { flush: new CompressWorker(file, this.codec, FLUSH_WORKER_TIMEOUT_MS), background: new CompressWorker(file, this.codec, null, BACKGROUND_NICE) };
      // Checkpoints move to the background worker; SQLite's own stays as a backstop.
      this.db.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
    } catch (err) {
      this.log?.error({ err }, 'compression worker did not start: compressing on the event loop');
      this.stopWorkers();
      return null;
    }
    return this.workers;
  }

  /** Stops the workers for good: packing goes inline and SQLite checkpoints by itself again. */
  private stopWorkers(): void {
    if (this.workers && this.workers !== 'inline') {
      this.workers.flush.dispose();
      this.workers.background.dispose();
      if (!this.closed) this.db.pragma('wal_autocheckpoint = 1000');
    }
    this.workers = 'inline';
  }

  /**
   * Packs a flush's items in the flush worker. If a worker breaks, both stop
   * and this packs inline from then on. Null if even that failed.
   */
  private async packOffLoop(items: PackInput[]): Promise<Packed[] | null> {
    const workers = this.startedWorkers();
    const packer: Packer = workers ? workers.flush : this.inline;
    try {
      return await packer.pack(items);
    } catch (err) {
      if (this.closed) return null;
      if (packer !== this.inline) {
        if (this.workers === workers) {
          this.log?.error({ err }, 'compression worker broke: compressing on the event loop from now on');
          this.stopWorkers();
        }
        return this.packOffLoop(items);
      }
      this.log?.error({ err }, 'compressing output failed');
      return null;
    }
  }

  /** Has the background worker checkpoint the WAL once enough was committed since the last time. */
  private maybeCheckpoint(committedBytes: number): void {
    this.uncheckpointedBytes += committedBytes;
    if (this.uncheckpointedBytes < CHECKPOINT_BYTES || this.checkpointing) return;
    const workers = this.workers;
    if (!workers || workers === 'inline') return;
    this.checkpointing = true;
    this.uncheckpointedBytes = 0;
    workers.background.checkpoint(this.file).then(
      () => (this.checkpointing = false),
      (err) => {
        this.checkpointing = false;
        if (this.closed || this.workers !== workers) return;
        if (workers.background.isBroken) {
          this.log?.error({ err }, 'compression worker broke: compressing on the event loop from now on');
          this.stopWorkers();
          return;
        }
        // A passing failure (SQLITE_BUSY on the worker's connection): the next one is asked for after CHECKPOINT_BYTES more.
        this.log?.warn({ err }, 'background WAL checkpoint failed');
      },
    );
  }

  /**
   * Starts compacting the sessions whose pieces add up to a segment, are
   * many, or have been quiet a while: the background worker reads them back
   * and recompresses them, and the first commit after they come back swaps
   * the segments in.
   */
  private planCompactions(now: number): void {
    let budget = COMPACTION_BYTES_PER_ROUND;
    const planned: Array<{ id: string; output: SessionOutput; compaction: Compaction; job: RecompactJob }> = [];
    for (const [id, output] of this.outputs) {
      if (budget <= 0) break;
      if (!this.compactionDue(output, now)) continue;
      const compaction: Compaction = { start: output.uncompactedStart, end: output.storedEnd, tailRows: output.tailRows, rows: null, source: [] };
      output.compaction = compaction;
      const job = { session: id, from: compaction.start, to: compaction.end, maxBytes: COMPACTION_BYTES_PER_ROUND, segmentBytes: this.segmentBytes };
      planned.push({ id, output, compaction, job });
      budget -= Math.min(job.maxBytes, job.to - job.from);
    }
    if (planned.length === 0) return;
    // One request for all (a postMessage each cost up to a few ms under load); without a worker, read here and compress on libuv's pool.
    const workers = this.startedWorkers();
    const jobs = planned.map((p) => p.job);
    const results = workers ? workers.background.recompact(this.file, jobs) : Promise.all(jobs.map((job) => this.recompactInline(job)));
    const work = results.then(
      (all) => {
        all.forEach((result, i) => this.compacted(planned[i], result));
        this.scheduleTick();
      },
      (err: unknown) => {
        if (this.closed) return;
        for (const { output, compaction } of planned) if (output.compaction === compaction) output.compaction = null;
        if (workers?.background.isBroken) {
          if (this.workers === workers) {
            this.log?.error({ err }, 'compression worker broke: compressing on the event loop from now on');
            this.stopWorkers();
          }
          return;
        }
        this.log?.warn({ err }, 'compacting stored output failed; leaving it as it is');
        for (const { output } of planned) output.settleUncompacted();
      },
    );
    this.compacting.add(work);
    void work.finally(() => this.compacting.delete(work));
  }

  /** Files a compaction that came back: swapped in by the next commit, unless the session moved on meanwhile. */
  private compacted(planned: { id: string; output: SessionOutput; compaction: Compaction }, result: RecompactResult): void {
    const { id, output, compaction } = planned;
    if (this.closed || this.outputs.get(id) !== output || output.compaction !== compaction) return;
    if (!result.error && result.settledTo > compaction.start && output.uncompactedStart === compaction.start) {
      // Raw rows at the front (and short runs between them) are final as they are: the run starts after them.
      output.uncompactedStart = compaction.start = result.settledTo;
      if (result.source.length === 0) {
        // Nothing else yet: what follows them waits for the next compaction.
        output.compaction = null;
        output.tailRows = 0;
        return;
      }
    }
    if (result.error || result.source.length === 0) {
      // It could not read or pack those rows: leave them be.
      if (result.error) this.log?.warn({ sessionId: id, err: result.error }, 'compacting stored output failed; leaving it as it is');
      output.compaction = null;
      output.settleUncompacted();
      return;
    }
    compaction.end = result.source[result.source.length - 1][1];
    compaction.source = result.source;
    compaction.rows = result.rows;
  }

  /** The session's pieces add up to a segment, are many, or have been quiet a while (and none is under way). */
  private compactionDue(output: SessionOutput, now: number): boolean {
    if (output.compaction || output.dropStored) return false;
    const tail = output.storedEnd - output.uncompactedStart;
    if (tail <= 0) return false;
    const full = tail >= this.segmentBytes || output.tailRows >= MAX_TAIL_ROWS;
    const quiet = output.end === output.storedEnd && now - output.lastAppendAt >= this.quietMs;
    return full || quiet;
  }

  /** What the background worker's recompact does, without a worker: reads here, compresses on libuv's pool. */
  private async recompactInline(range: RecompactJob): Promise<RecompactResult> {
    const id = range.session;
    // This reads (and decompresses) on the event loop: a little at a time.
    const maxBytes = Math.min(range.maxBytes, 2 * range.segmentBytes);
    const { settledTo, source } = pickCompactionRun(this.stmts.rowsIn.iterate(id, range.from, range.to), range.from, maxBytes);
    if (source.length === 0) return { settledTo, source, rows: [] };
    const end = source[source.length - 1][1];
    const raw = Buffer.concat(readChunks(this.stmts, id, settledTo, end));
    const count = Math.max(1, Math.floor(raw.length / range.segmentBytes));
    const packed = await this.inline.segments(raw, count);
    return {
      settledTo,
      source,
      rows: packed.map((p, i) => ({ start: settledTo + Math.floor((raw.length * i) / count), end: settledTo + Math.floor((raw.length * (i + 1)) / count), kind: p.kind, data: p.data })),
    };
  }

  /**
   * Resolves once the compactions under way have come back and are swapped
   * in, with those that the flushes this needs start in turn (benches and
   * tests; the daemon never waits for compaction).
   */
  async compactionsSettled(): Promise<void> {
    for (let round = 0; round < 1000 && !this.closed; round++) {
      await Promise.all(this.compacting);
      await this.flushAsync();
      const now = Date.now();
      const pending = [...this.outputs.values()].some((o) => o.compaction || this.compactionDue(o, now));
      if (this.compacting.size === 0 && !pending) return;
    }
  }

  /**
   * Commits what is ready in one transaction: queued records, packed rows
   * and snapshots, finished compactions. Null if there was nothing to write.
   */
  private commit(): boolean | null {
    if (!this.hasCommittable()) return null;
    let committed: Array<() => void>;
    try {
      committed = this.db.transaction(() => this.writeBatch())();
    } catch (err) {
      this.flushFailed(err);
      this.scheduleTick();
      return false;
    }
    for (const apply of committed) apply();
    this.queued.deletes.clear();
    this.queued.sessions.clear();
    this.queued.turns.clear();
    this.queued.events = [];
    if (this.failure) this.recoveredFromFailure();
    this.maybeCheckpoint(this.batchBytes);
    // Compactions left for lack of budget go in with the next tick.
    for (const output of this.outputs.values()) if (output.compaction?.rows) this.scheduleTick();
    return true;
  }

  /** Roughly what the last transaction wrote, for checkpoint pacing. */
  private batchBytes = 0;

  /** Runs inside the transaction; returns what to apply to memory once it has committed. */
  private writeBatch(): Array<() => void> {
    const { stmts, queued } = this;
    let bytes = 256 * (queued.sessions.size + queued.turns.size + queued.events.length + queued.deletes.size);
    for (const id of queued.deletes) for (const del of stmts.deleteSession) del.run(id);
    for (const record of queued.sessions.values()) stmts.putSession.run(record);
    for (const turn of queued.turns.values()) stmts.putTurn.run(turn);
    for (const e of queued.events) stmts.insertEvent.run(e.sessionId, e.type, e.at, e.detail);
    const committed: Array<() => void> = [];
    const snapshotSessions = new Set<string>();
    const written = new Set<QueuedSnapshot>();
    for (const q of queued.snapshots) {
      if (!q.data) continue;
      const s = q.snapshot;
      stmts.insertSnapshot.run(s.sessionId, s.offset, s.cols, s.rows, s.createdAt, q.data);
      bytes += q.data.length;
      snapshotSessions.add(s.sessionId);
      written.add(q);
    }
    for (const id of snapshotSessions) stmts.keepNewestSnapshots.run(id, id, this.snapshotsKept);
    if (written.size > 0) committed.push(() => (this.queued.snapshots = this.queued.snapshots.filter((q) => !written.has(q))));
    let compactionBudget = COMPACTED_BYTES_PER_COMMIT;
    for (const [id, output] of this.outputs) {
      const compacted = output.compaction?.rows;
      const swapIn = !!compacted && compactionBudget > 0;
      if (output.packed.length === 0 && !output.dropStored && !swapIn) continue;
      for (const row of output.packed) bytes += row.data.length + 64;
      if (swapIn) {
        const size = compacted.reduce((n, r) => n + r.data.length + 64, 0);
        compactionBudget -= size;
        bytes += size;
      }
      const stored = writeOutput(this.stmts, id, output, this.maxHistoryBytes, swapIn);
      committed.push(() => output.committed(stored.start, stored.end, stored.pieces, stored.compaction));
    }
    this.batchBytes = bytes;
    for (const id of queued.deletes) {
      committed.push(() => {
        const output = this.outputs.get(id);
        if (output && output.end === 0 && !output.hasStored) this.outputs.delete(id);
      });
    }
    this.faultInjector?.();
    return committed;
  }

  private hasCommittable(): boolean {
    const q = this.queued;
    if (q.deletes.size || q.sessions.size || q.turns.size || q.events.length) return true;
    if (q.snapshots.some((s) => s.data)) return true;
    for (const output of this.outputs.values()) if (output.packed.length > 0 || output.dropStored || output.compaction?.rows) return true;
    return false;
  }

  private flushFailed(err: unknown): void {
    const code = (err as { code?: unknown } | null)?.code;
    const kind =
      code === 'SQLITE_FULL' ? 'disk full'
      : typeof code === 'string' && code.startsWith('SQLITE_IOERR') ? 'disk write error'
      : typeof code === 'string' && code.startsWith('SQLITE_BUSY') ? 'database locked by another process'
      : 'write failed';
    const message = `${kind} (${typeof code === 'string' ? code : 'no code'}: ${(err as Error)?.message ?? String(err)})`;
    const first = this.failure === null;
    this.failure = { message, count: (this.failure?.count ?? 0) + 1, since: this.failure?.since ?? Date.now() };
    if (first) {
      this.log?.warn({ err }, 'store flush failed; keeping the batch in memory and retrying');
      this.healthEmitter.fire(this.health());
    }
  }

  private recoveredFromFailure(): void {
    this.log?.info({ failedFlushes: this.failure?.count }, 'store flush succeeded again');
    this.failure = null;
    this.healthEmitter.fire(this.health());
  }

  /** Arms the tick that flushes what was queued; one at a time, and not after close. */
  private scheduleTick(): void {
    if (this.tickTimer || this.closed) return;
    this.tickTimer = setTimeout(() => {
      this.tickTimer = null;
      void this.flushAsync();
    }, this.flushIntervalMs);
    // The tick alone must not keep the process alive; close() flushes what is left.
    this.tickTimer.unref();
  }

  /** After a timed flush: if some session has uncompacted pieces, look again once it may have gone quiet. */
  private scheduleQuietCheck(): void {
    if (this.quietTimer || this.closed) return;
    let tails = false;
    for (const output of this.outputs.values()) if (!output.compaction && output.storedEnd > output.uncompactedStart) tails = true;
    if (!tails) return;
    this.quietTimer = setTimeout(() => {
      this.quietTimer = null;
      void this.flushAsync();
    }, this.quietMs + 50);
    this.quietTimer.unref();
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
