import type Database from 'better-sqlite3';
import { Emitter, type Event } from '../common/events';
import type { Logger } from '../common/log';
import { packSnapshot, type CodecSettings } from './codec';
import type { Compactor } from './Compactor';
import type { CompressionWorkers } from './CompressionWorkers';
import { writeOutput } from './outputChunks';
import type { InlinePacker, PackInput, Packed } from './packer';
import type { SessionOutput } from './SessionOutput';
import type { ScreenSnapshot, SessionRecord, StoreHealth, TurnRecord } from './SessionStore';
import type { EventRow, Statements } from './statements';

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

/**
 * Compacted bytes swapped in per commit: all sessions of the bench reach a
 * segment on the same tick, and swapping 100 segments in at once took a
 * 10 ms commit. The rest waits for the next tick.
 */
const COMPACTED_BYTES_PER_COMMIT = 256 * 1024;

export interface QueuedSnapshot {
  snapshot: ScreenSnapshot;
  /** gzip, once packed. */
  data: Buffer | null;
  /** Handed to the packer. */
  sent: boolean;
}

/** The writes other than output waiting for the next commit; reads merge them with what is on disk. */
export interface WriteQueue {
  deletes: Set<string>;
  sessions: Map<string, SessionRecord>;
  turns: Map<string, TurnRecord>;
  /** `detail` already as JSON, so a queued event reads back exactly as a stored one. */
  events: EventRow[];
  snapshots: QueuedSnapshot[];
}

/** What one flush handed to the packer, item by item. */
type JobEntry =
  | { id: string; output: SessionOutput; epoch: number; start: number; end: number }
  | { queued: QueuedSnapshot };

export interface BatchWriterOptions {
  db: Database.Database;
  stmts: Statements;
  /** The store's queue and sessions' output, shared: the store fills them, commits empty them. */
  queued: WriteQueue;
  outputs: Map<string, SessionOutput>;
  codec: CodecSettings;
  /** Packs for `flush()`. */
  inline: InlinePacker;
  workers: Pick<CompressionWorkers, 'pack' | 'maybeCheckpoint'>;
  compactor: Pick<Compactor, 'plan'>;
  maxHistoryBytes: number;
  flushIntervalMs: number;
  chunkBytes: number;
  quietMs: number;
  snapshotsKept: number;
  faultInjector?: () => void;
  onFlush?: (stats: FlushStats) => void;
  log?: Logger;
}

/**
 * The SQLite store's batched writer: commits what the store queued, all
 * sessions in one transaction, in rounds on a timer (packed off the event
 * loop) or at once (`flush()`). A failed commit keeps its batch for the next
 * tick and reports the store degraded until one succeeds.
 */
export class BatchWriter {

  private tickTimer: NodeJS.Timeout | null = null;
  private quietTimer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  /** The timed flush under way, and the one asked for while it runs. */
  private running: Promise<boolean> | null = null;
  private rerun: Promise<boolean> | null = null;
  /** The round queued in `rerun` takes every byte (some caller wanted everything), not only full rows. */
  private rerunTakesAll = false;
  /** Roughly what the last transaction wrote, for checkpoint pacing. */
  private batchBytes = 0;
  private failure: { message: string; count: number; since: number } | null = null;
  private readonly healthEmitter = new Emitter<StoreHealth>();
  private closed = false;

  /** Fires when health changes (degraded on a failed flush, ok after a retry succeeds). */
  readonly onHealthChange: Event<StoreHealth> = this.healthEmitter.event;

  constructor(private readonly options: BatchWriterOptions) {}

  /** Commits everything queued now, packing on the event loop (`SqliteStore.flush`). */
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
    if (ok !== null) this.options.onFlush?.({ mode: 'sync', mainMs: done - started, totalMs: done - started, prepareMs: beforeCommit - started, commitMs: done - beforeCommit, ok });
    return ok ?? true;
  }

  /** Flushes the way the timer does (`SqliteStore.flushAsync`). */
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

  health(): StoreHealth {
    if (!this.failure) return { status: 'ok' };
    const queued = [...this.options.outputs.values()].reduce((n, o) => n + o.pendingBytes, 0);
    const others = this.options.queued.sessions.size + this.options.queued.deletes.size + this.options.queued.turns.size + this.options.queued.events.length + this.options.queued.snapshots.length;
    return {
      status: 'degraded',
      detail: `${this.failure.message}: ${this.failure.count} failed flush(es) since ${new Date(this.failure.since).toISOString()}; ` +
        `${queued} bytes of output and ${others} other writes kept in memory, retried every ${this.options.flushIntervalMs} ms`,
    };
  }

  /** Arms the tick that flushes what was queued; one at a time, and not after close. */
  scheduleTick(): void {
    if (this.tickTimer || this.closed) return;
    this.tickTimer = setTimeout(() => {
      this.tickTimer = null;
      void this.flushAsync();
    }, this.options.flushIntervalMs);
    // The tick alone must not keep the process alive; close() flushes what is left.
    this.tickTimer.unref();
  }

  /** Output was appended to `output`: arms the tick, and a flush soon if it has a full chunk queued. */
  outputAppended(output: SessionOutput): void {
    this.scheduleTick();
    // A full chunk is ready: write it soon, but never inside the caller's call. Not while degraded: retries wait for the tick.
    if (output.end - output.sentEnd >= this.options.chunkBytes && !this.immediate && !this.failure) {
      this.immediate = setImmediate(() => {
        this.immediate = null;
        void this.flushAsync({ wholeRows: true });
      });
    }
  }

  /** Stops for good: no more ticks or rounds, and no more health changes. The caller flushed first. */
  close(): void {
    this.closed = true;
    for (const timer of [this.tickTimer, this.quietTimer]) if (timer) clearTimeout(timer);
    this.tickTimer = this.quietTimer = null;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = null;
    this.healthEmitter.dispose();
  }

  private startRound(wholeRows: boolean): Promise<boolean> {
    // flushRound starts now (it takes the queue synchronously) and, being async, settles later: `round` is set by then.
    let round: Promise<boolean> | undefined;
    round = (async (): Promise<boolean> => {
      try {
        return await this.flushRound(wholeRows);
      } catch (err) {
        this.options.log?.error({ err }, 'store flush round failed');
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
    this.options.compactor.plan(Date.now());
    const pending = items.length > 0 ? this.options.workers.pack(items) : null;
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
    if (ok !== null) this.options.onFlush?.({ mode: 'tick', mainMs, totalMs: done - started, prepareMs, commitMs: done - beforeCommit, ok });
    this.scheduleQuietCheck();
    return ok ?? true;
  }

  /** What is not yet handed to a packer: each session's new bytes in rows of at most `chunkBytes` (only full ones if `wholeRows`), and new snapshots. */
  private takeUnpacked(wholeRows = false): { entries: JobEntry[]; items: PackInput[] } {
    const entries: JobEntry[] = [];
    const items: PackInput[] = [];
    for (const [id, output] of this.options.outputs) {
      if (output.sentEnd >= output.end) continue;
      for (const row of output.takeUnsent(this.options.chunkBytes, wholeRows)) {
        entries.push({ id, output, epoch: output.epoch, start: row.start, end: row.end });
        items.push({ what: 'piece', parts: row.parts });
      }
    }
    for (const queued of this.options.queued.snapshots) {
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
      if (this.options.outputs.get(entry.id) !== entry.output) return;
      if (packed) entry.output.addPacked({ start: entry.start, end: entry.end, kind: packed[i].kind, data: packed[i].data }, entry.epoch);
      else entry.output.unsend();
    });
  }

  /** Packs on the event loop whatever is not packed yet, including what the worker is still busy with (its answer will be stale). */
  private packAllNow(): void {
    for (const output of this.options.outputs.values()) {
      if (output.packedEnd >= output.end) continue;
      output.unsend();
      const rows = output.takeUnsent(this.options.chunkBytes);
      const packed = this.options.inline.packNow(rows.map((r) => ({ what: 'piece', parts: r.parts })));
      rows.forEach((r, i) => output.addPacked({ start: r.start, end: r.end, kind: packed[i].kind, data: packed[i].data }, output.epoch));
    }
    for (const queued of this.options.queued.snapshots) {
      if (queued.data) continue;
      // Level 1 here: this is on the event loop (the worker uses the codec's level).
      queued.data = packSnapshot(Buffer.from(queued.snapshot.data, 'utf8'), { ...this.options.codec, snapshotLevel: 1 });
      queued.sent = true;
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
      committed = this.options.db.transaction(() => this.writeBatch())();
    } catch (err) {
      this.flushFailed(err);
      this.scheduleTick();
      return false;
    }
    for (const apply of committed) apply();
    this.options.queued.deletes.clear();
    this.options.queued.sessions.clear();
    this.options.queued.turns.clear();
    this.options.queued.events = [];
    if (this.failure) this.recoveredFromFailure();
    this.options.workers.maybeCheckpoint(this.batchBytes);
    // Compactions left for lack of budget go in with the next tick.
    for (const output of this.options.outputs.values()) if (output.compaction?.rows) this.scheduleTick();
    return true;
  }

  /** Runs inside the transaction; returns what to apply to memory once it has committed. */
  private writeBatch(): Array<() => void> {
    const { stmts, queued } = this.options;
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
    for (const id of snapshotSessions) stmts.keepNewestSnapshots.run(id, id, this.options.snapshotsKept);
    if (written.size > 0) committed.push(() => (queued.snapshots = queued.snapshots.filter((q) => !written.has(q))));
    let compactionBudget = COMPACTED_BYTES_PER_COMMIT;
    for (const [id, output] of this.options.outputs) {
      const compacted = output.compaction?.rows;
      const swapIn = !!compacted && compactionBudget > 0;
      if (output.packed.length === 0 && !output.dropStored && !swapIn) continue;
      for (const row of output.packed) bytes += row.data.length + 64;
      if (swapIn) {
        const size = compacted.reduce((n, r) => n + r.data.length + 64, 0);
        compactionBudget -= size;
        bytes += size;
      }
      const stored = writeOutput(stmts, id, output, this.options.maxHistoryBytes, swapIn);
      committed.push(() => output.committed(stored.start, stored.end, stored.pieces, stored.compaction));
    }
    this.batchBytes = bytes;
    for (const id of queued.deletes) {
      committed.push(() => {
        const output = this.options.outputs.get(id);
        if (output && output.end === 0 && !output.hasStored) this.options.outputs.delete(id);
      });
    }
    this.options.faultInjector?.();
    return committed;
  }

  private hasCommittable(): boolean {
    const q = this.options.queued;
    if (q.deletes.size || q.sessions.size || q.turns.size || q.events.length) return true;
    if (q.snapshots.some((s) => s.data)) return true;
    for (const output of this.options.outputs.values()) if (output.packed.length > 0 || output.dropStored || output.compaction?.rows) return true;
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
      this.options.log?.warn({ err }, 'store flush failed; keeping the batch in memory and retrying');
      this.healthEmitter.fire(this.health());
    }
  }

  private recoveredFromFailure(): void {
    this.options.log?.info({ failedFlushes: this.failure?.count }, 'store flush succeeded again');
    this.failure = null;
    this.healthEmitter.fire(this.health());
  }

  /** After a timed flush: if some session has uncompacted pieces, look again once it may have gone quiet. */
  private scheduleQuietCheck(): void {
    if (this.quietTimer || this.closed) return;
    let tails = false;
    for (const output of this.options.outputs.values()) if (!output.compaction && output.storedEnd > output.uncompactedStart) tails = true;
    if (!tails) return;
    this.quietTimer = setTimeout(() => {
      this.quietTimer = null;
      void this.flushAsync();
    }, this.options.quietMs + 50);
    this.quietTimer.unref();
  }
}
