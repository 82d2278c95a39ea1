import type Database from 'better-sqlite3';
import type { Logger } from '../common/log';
import type { CodecSettings } from './codec';
import { CompressWorker, compressWorkerPath, type InlinePacker, type PackInput, type Packed, type Packer } from './packer';

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

/** The two compression threads: one packs flushes, the other compacts and checkpoints. */
export interface WorkerPair {
  flush: CompressWorker;
  background: CompressWorker;
}

export interface CompressionWorkersOptions {
  /** The store's connection: its auto-checkpoint is turned down while the background worker checkpoints. */
  db: Database.Database;
  /** The database file, which the background worker opens on its own connection. */
  file: string;
  codec: CodecSettings;
  /** Packs when no worker runs. */
  inline: InlinePacker;
  /** False: never start the workers, pack inline. */
  enabled: boolean;
  log?: Logger;
}

/**
 * The SQLite store's compression worker threads, started on first use, and
 * the pacing of the WAL checkpoints the background one runs. When a worker
 * cannot start or breaks, both stop for good and everything packs inline.
 */
export class CompressionWorkers {
  /**
   * Started on the first timed flush: one packs flushes, the other compacts
   * and checkpoints. 'inline' when told not to use them or they could not run.
   */
  private workers: WorkerPair | 'inline' | null;
  private checkpointing = false;
  /** Bytes committed since the last checkpoint the background worker was asked for (an estimate). */
  private uncheckpointedBytes = 0;
  private closed = false;

  constructor(private readonly options: CompressionWorkersOptions) {
    this.workers = options.enabled ? null : 'inline';
  }

  /** The workers if they run, 'inline' if they will not, null before the first use. */
  get state(): WorkerPair | 'inline' | null {
    return this.workers;
  }

  /** The workers, started on first use; null when they cannot run (then everything packs inline). */
  started(): WorkerPair | null {
    if (this.workers === 'inline') return null;
    if (this.workers) return this.workers;
    const file = compressWorkerPath();
    if (!file) {
      this.options.log?.warn('compression worker not built (run "npm run build"): compressing on the event loop');
      this.workers = 'inline';
      return null;
    }
    try {
      const flush = new CompressWorker(file, this.options.codec, FLUSH_WORKER_TIMEOUT_MS);
      try {
        this.workers = { flush, background: new CompressWorker(file, this.options.codec, null, BACKGROUND_NICE) };
      } catch (err) {
        flush.dispose(); // the first thread must not outlive the pair that failed
        throw err;
      }
      // Checkpoints move to the background worker; SQLite's own stays as a backstop.
      this.options.db.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
    } catch (err) {
      this.options.log?.error({ err }, 'compression worker did not start: compressing on the event loop');
      this.stop();
      return null;
    }
    return this.workers;
  }

  /** A worker of `workers` broke: unless they were already stopped, stop them and pack inline from now on. */
  retire(workers: WorkerPair, err: unknown): void {
    if (this.workers !== workers) return;
    this.options.log?.error({ err }, 'compression worker broke: compressing on the event loop from now on');
    this.stop();
  }

  /**
   * Packs a flush's items in the flush worker. If a worker breaks, both stop
   * and this packs inline from then on. Null if even that failed.
   */
  async pack(items: PackInput[]): Promise<Packed[] | null> {
    const workers = this.started();
    const packer: Packer = workers ? workers.flush : this.options.inline;
    try {
      return await packer.pack(items);
    } catch (err) {
      if (this.closed) return null;
      if (workers) {
        this.retire(workers, err);
        return this.pack(items);
      }
      this.options.log?.error({ err }, 'compressing output failed');
      return null;
    }
  }

  /** Has the background worker checkpoint the WAL once enough was committed since the last time. */
  maybeCheckpoint(committedBytes: number): void {
    this.uncheckpointedBytes += committedBytes;
    if (this.uncheckpointedBytes < CHECKPOINT_BYTES || this.checkpointing) return;
    const workers = this.workers;
    if (!workers || workers === 'inline') return;
    this.checkpointing = true;
    this.uncheckpointedBytes = 0;
    workers.background.checkpoint(this.options.file).then(
      () => (this.checkpointing = false),
      (err) => {
        this.checkpointing = false;
        if (this.closed || this.workers !== workers) return;
        if (workers.background.isBroken) {
          this.retire(workers, err);
          return;
        }
        // A passing failure (SQLITE_BUSY on the worker's connection): the next one is asked for after CHECKPOINT_BYTES more.
        this.options.log?.warn({ err }, 'background WAL checkpoint failed');
      },
    );
  }

  /** Stops the workers for good (the store is closing; its connection is left as it is). */
  dispose(): void {
    this.closed = true;
    this.stop();
  }

  /** Stops the workers for good: packing goes inline and SQLite checkpoints by itself again. */
  private stop(): void {
    if (this.workers && this.workers !== 'inline') {
      this.workers.flush.dispose();
      this.workers.background.dispose();
      if (!this.closed) this.options.db.pragma('wal_autocheckpoint = 1000');
    }
    this.workers = 'inline';
  }
}
