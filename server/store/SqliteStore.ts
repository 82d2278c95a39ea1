import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import type Database from 'better-sqlite3';
import { Emitter, type Event } from '../common/events';
import type { Logger } from '../common/log';
import { DB_FILE, openDatabase, type Recovery } from './database';
import { DataDirLock } from './lock';
import { findMigrationsDir, readMigrations } from './migrate';
import { readChunks, writeChunks, type ChunkSettings } from './outputChunks';
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
import { prepareStatements, type EventRow, type Statements } from './statements';

export interface SqliteStoreOptions {
  /** Directory of `agentd.db` and `agentd.lock`; created (mode 0700) if missing. */
  dataDir: string;
  /** Output kept per session; older chunks are dropped whole, so a little more may stay. Default 50 MiB. */
  maxHistoryBytes?: number;
  /** Queued writes are flushed this often. Default 1000 ms. */
  flushIntervalMs?: number;
  /**
   * A session with this much output queued (a full chunk) triggers a flush on
   * the next turn of the event loop; also the largest chunk row. Default 64 KiB.
   */
  chunkBytes?: number;
  /** gzip level of output chunks and snapshots. Default 1: see COMPRESSION_LEVEL. */
  compressionLevel?: number;
  /** Snapshots kept per session, newest by offset. Default 3. */
  snapshotsKept?: number;
  /** How long a statement waits for a lock held by another connection (blocking the event loop). Default 500 ms. */
  busyTimeoutMs?: number;
  /** Called inside every flush transaction before it commits; throwing fails the flush (tests inject disk errors). */
  faultInjector?: () => void;
  log?: Logger;
}

const DEFAULT_MAX_HISTORY_BYTES = 50 * 1024 * 1024; // config's maxSessionHistoryMB default
const FLUSH_INTERVAL_MS = 1000; // at most a second of output lost if the daemon dies
const CHUNK_BYTES = 64 * 1024; // gzip reaches ~6x on terminal output at 64 KiB, ~4x at 4 KiB
/** Level 1 compresses agent-like output 6.1x at ~3 ms/MB; level 6 gets 7.6x at ~8 ms/MB, on the event loop. */
const COMPRESSION_LEVEL = 1;
/**
 * A newest chunk smaller than this is kept raw and rewritten with the next
 * bytes: quiet sessions (a spinner, a keystroke echo) would otherwise leave a
 * sliver row per tick, compressing badly and slowing reads, or pay gzip's
 * per-call setup every tick (100 quiet sessions: 13.6 ms a tick when every
 * tick recompressed, 1.9 ms raw). Compressed chunks are at least this large.
 */
const SEAL_BYTES = 16 * 1024;
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
 * reads merge what is on disk with what is queued. A failed flush (disk full,
 * I/O error) rolls back, keeps its batch and is retried on the next tick while
 * `health()` reports degraded.
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
  private readonly chunkSettings: ChunkSettings;
  private readonly compressionLevel: number;
  private readonly snapshotsKept: number;
  private readonly faultInjector?: () => void;
  private readonly log?: Logger;

  private readonly outputs = new Map<string, SessionOutput>();
  private readonly queued = {
    deletes: new Set<string>(),
    sessions: new Map<string, SessionRecord>(),
    turns: new Map<string, TurnRecord>(),
    /** `detail` already as JSON, so a queued event reads back exactly as a stored one. */
    events: [] as EventRow[],
    snapshots: [] as ScreenSnapshot[],
  };
  private tickTimer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
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
    this.compressionLevel = options.compressionLevel ?? COMPRESSION_LEVEL;
    this.chunkSettings = {
      chunkBytes: this.chunkBytes,
      sealBytes: Math.min(SEAL_BYTES, this.chunkBytes),
      compressionLevel: this.compressionLevel,
      maxHistoryBytes: this.maxHistoryBytes,
    };
    this.snapshotsKept = positive(options.snapshotsKept, SNAPSHOTS_KEPT, 'snapshotsKept');
    this.faultInjector = options.faultInjector;
    this.log = options.log;

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
    this.queued.snapshots = this.queued.snapshots.filter((s) => s.sessionId !== id);
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
    const { gap } = output.append(offset, data, this.maxHistoryBytes);
    if (gap) this.log?.warn({ sessionId, offset }, 'output gap: history before it is dropped');
    this.scheduleTick();
    // A full chunk is ready: write it soon, but never inside the caller's call. Not while degraded: retries wait for the tick.
    if (output.queuedBytes >= this.chunkBytes && !this.immediate && !this.failure) {
      this.immediate = setImmediate(() => {
        this.immediate = null;
        this.flush();
      });
    }
  }

  readOutput(sessionId: string, from: number, to?: number): OutputSlice | null {
    const output = this.outputOf(sessionId, false);
    if (from < output.start) return null;
    const stop = Math.min(to ?? output.end, output.end);
    if (from >= stop) return { offset: from, data: Buffer.alloc(0) };
    const parts: Buffer[] = [];
    if (output.hasStored && from < output.storedEnd) parts.push(...readChunks(this.stmts, sessionId, from, Math.min(stop, output.storedEnd)));
    parts.push(...output.queuedSlices(from, stop));
    return { offset: from, data: parts.length === 1 ? parts[0] : Buffer.concat(parts) };
  }

  outputRange(sessionId: string): { start: number; end: number } {
    const output = this.outputOf(sessionId, false);
    return { start: output.start, end: output.end };
  }

  // ── snapshots, events, turns ────────────────────────────────────────────

  putSnapshot(snapshot: ScreenSnapshot): void {
    this.assertOpen();
    this.queued.snapshots.push({ ...snapshot });
    // While the disk lags, keep only as many queued screens as would be kept on disk (each can be a megabyte).
    const mine = this.queued.snapshots.filter((s) => s.sessionId === snapshot.sessionId);
    if (mine.length > this.snapshotsKept) {
      const oldest = mine.reduce((a, b) => (b.offset < a.offset ? b : a));
      this.queued.snapshots.splice(this.queued.snapshots.indexOf(oldest), 1);
    }
    this.scheduleTick();
  }

  latestSnapshot(sessionId: string, atOrBefore = Number.MAX_SAFE_INTEGER): ScreenSnapshot | undefined {
    let best: ScreenSnapshot | undefined;
    for (const s of this.queued.snapshots) {
      if (s.sessionId === sessionId && s.offset <= atOrBefore && (!best || s.offset >= best.offset)) best = s;
    }
    if (this.queued.deletes.has(sessionId)) return best && { ...best };
    const row = this.stmts.latestSnapshot.get(sessionId, atOrBefore);
    if (row && (!best || row.offset > best.offset)) {
      return { sessionId, offset: row.offset, cols: row.cols, rows: row.rows, createdAt: row.createdAt, data: gunzipSync(row.data).toString('utf8') };
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
   * Writes everything queued in one transaction. Never throws on a write
   * error: the transaction rolls back, the batch stays queued for the next
   * tick, and `health()` says why. Returns whether everything is on disk.
   */
  flush(): boolean {
    if (this.closed) return true;
    if (this.immediate) {
      clearImmediate(this.immediate);
      this.immediate = null;
    }
    if (!this.hasQueued()) return true;
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
    this.queued.snapshots = [];
    if (this.failure) this.recoveredFromFailure();
    return true;
  }

  health(): StoreHealth {
    if (!this.failure) return { status: 'ok' };
    const queued = [...this.outputs.values()].reduce((n, o) => n + o.queuedBytes, 0);
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
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.tickTimer = null;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = null;
    this.checkpoint();
    this.db.close();
    this.lock.release();
    this.healthEmitter.dispose();
  }

  dispose(): void {
    this.close();
  }

  /** Runs inside the transaction; returns what to apply to memory once it has committed. */
  private writeBatch(): Array<() => void> {
    const { stmts, queued } = this;
    for (const id of queued.deletes) for (const del of stmts.deleteSession) del.run(id);
    for (const record of queued.sessions.values()) stmts.putSession.run(record);
    for (const turn of queued.turns.values()) stmts.putTurn.run(turn);
    for (const e of queued.events) stmts.insertEvent.run(e.sessionId, e.type, e.at, e.detail);
    const snapshotSessions = new Set<string>();
    for (const s of queued.snapshots) {
      stmts.insertSnapshot.run(s.sessionId, s.offset, s.cols, s.rows, s.createdAt, gzipSync(s.data, { level: this.compressionLevel }));
      snapshotSessions.add(s.sessionId);
    }
    for (const id of snapshotSessions) stmts.keepNewestSnapshots.run(id, id, this.snapshotsKept);
    const committed: Array<() => void> = [];
    for (const [id, output] of this.outputs) {
      if (output.queuedBytes === 0 && !output.dropStored) continue;
      const stored = writeChunks(this.stmts, id, output, this.chunkSettings);
      committed.push(() => output.committed(stored));
    }
    for (const id of queued.deletes) {
      committed.push(() => {
        const output = this.outputs.get(id);
        if (output && output.queuedBytes === 0 && !output.hasStored) this.outputs.delete(id);
      });
    }
    this.faultInjector?.();
    return committed;
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

  private hasQueued(): boolean {
    const q = this.queued;
    if (q.deletes.size || q.sessions.size || q.turns.size || q.events.length || q.snapshots.length) return true;
    for (const output of this.outputs.values()) if (output.queuedBytes > 0 || output.dropStored) return true;
    return false;
  }

  /** Arms the tick that flushes what was queued; one at a time, and not after close. */
  private scheduleTick(): void {
    if (this.tickTimer || this.closed) return;
    this.tickTimer = setTimeout(() => {
      this.tickTimer = null;
      this.flush();
    }, this.flushIntervalMs);
    // The tick alone must not keep the process alive; close() flushes what is left.
    this.tickTimer.unref();
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
      output = first && last ? new SessionOutput(first.start, last.end, last.start) : SessionOutput.empty();
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
