import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { IDisposable } from '../common/disposable';
import type { ScreenReply, ScreenRequest } from './screenProtocol';

export interface Snapshot {
  offset: number;
  cols: number;
  rows: number;
  data: string;
}

/**
 * Bytes a session may have in flight to the worker before we stop feeding it.
 * The worker parses ~25–50 MB/s and a flood (`cat` of a big file) arrives at
 * ~60 MB/s: parsing all of it costs ~20 ms of CPU per MB, which on two cores
 * halves the stream's throughput (bench/core.ts). Past this lag the model
 * stops parsing and is rebuilt from the newest bytes when it is next needed —
 * exact for line output, which is what floods are; agents' own bursts stay
 * far below it.
 */
const MAX_BACKLOG_BYTES = 1024 * 1024;
/** Bytes replayed into a rebuilt model after a flood. */
const REBUILD_TAIL_BYTES = 256 * 1024;
const SNAPSHOT_TIMEOUT_MS = 10_000;

function workerPath(): string {
  const beside = join(__dirname, 'screenWorker.js');
  if (existsSync(beside)) return beside;
  // Under ts-jest the sources run from server/; the worker runs compiled (npm test builds first).
  const built = resolve(__dirname, '../../dist/server/sessions/screenWorker.js');
  if (existsSync(built)) return built;
  throw new Error(`screen worker not built: run "npm run build" (looked for ${beside} and ${built})`);
}

interface Feed {
  pending: Buffer[];
  pendingBytes: number;
  /** Offset of the next byte the worker will see. */
  fedOffset: number;
  /** Offset up to which the worker has parsed. */
  parsedOffset: number;
  /** Set while a flood outran the worker: bytes from here were not fed. */
  skippedFrom: number | null;
  cols: number;
  rows: number;
}

/** The main-thread side of the screen worker: ordered feeding, exact snapshots. */
export class ScreenService implements IDisposable {
  private readonly worker: Worker;
  private readonly feeds = new Map<string, Feed>();
  private readonly waiting = new Map<number, { resolve: (s: Snapshot) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly textWaiting = new Map<number, (lines: string[] | null) => void>();
  private nextRequest = 1;
  private flushScheduled = false;
  private disposed = false;

  constructor() {
    this.worker = new Worker(workerPath());
    this.worker.unref();
    this.worker.on('message', (msg: ScreenReply) => this.onReply(msg));
    this.worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  open(id: string, opts: { cols: number; rows: number; offset: number; base?: string }): void {
    this.feeds.set(id, { pending: [], pendingBytes: 0, fedOffset: opts.offset, parsedOffset: opts.offset, skippedFrom: null, cols: opts.cols, rows: opts.rows });
    this.post({ type: 'open', id, ...opts });
  }

  has(id: string): boolean {
    return this.feeds.has(id);
  }

  /** Queues output for the model; cheap enough for the output path (one push). */
  feed(id: string, chunk: Buffer): void {
    const f = this.feeds.get(id);
    if (!f) return;
    if (f.skippedFrom !== null || f.fedOffset - f.parsedOffset + f.pendingBytes > MAX_BACKLOG_BYTES) {
      f.skippedFrom ??= f.fedOffset + f.pendingBytes;
      return;
    }
    f.pending.push(chunk);
    f.pendingBytes += chunk.length;
    this.scheduleFlush();
  }

  resize(id: string, cols: number, rows: number): void {
    const f = this.feeds.get(id);
    if (!f) return;
    this.flushOne(id, f);
    f.cols = cols;
    f.rows = rows;
    this.post({ type: 'resize', id, cols, rows });
  }

  /**
   * The screen at the current end of what was fed. `tail` supplies the newest
   * bytes if a flood outran the model (then the snapshot is rebuilt from them).
   */
  snapshot(id: string, tail?: (fromOffset: number) => { offset: number; data: Buffer } | null): Promise<Snapshot> {
    const f = this.feeds.get(id);
    if (!f) return Promise.reject(new Error(`no screen for ${id}`));
    if (f.skippedFrom !== null) this.rebuild(id, f, tail);
    this.flushOne(id, f);
    const requestId = this.nextRequest++;
    return new Promise<Snapshot>((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(requestId);
        reject(new Error('screen snapshot timed out'));
      }, SNAPSHOT_TIMEOUT_MS);
      this.waiting.set(requestId, { resolve: resolvePromise, reject, timer });
      this.post({ type: 'snapshot', id, requestId });
    });
  }

  /** The visible screen as plain text lines (for reading an agent's dialogs); null if there is no screen. */
  text(id: string): Promise<string[] | null> {
    const f = this.feeds.get(id);
    if (!f) return Promise.resolve(null);
    this.flushOne(id, f);
    const requestId = this.nextRequest++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.textWaiting.delete(requestId);
        resolve(null);
      }, SNAPSHOT_TIMEOUT_MS);
      this.textWaiting.set(requestId, (lines) => {
        clearTimeout(timer);
        resolve(lines);
      });
      this.post({ type: 'text', id, requestId });
    });
  }

  /** Replaces the model with one built from the newest bytes after a flood. */
  private rebuild(id: string, f: Feed, tail?: (fromOffset: number) => { offset: number; data: Buffer } | null): void {
    const end = f.skippedFrom!;
    const slice = tail?.(Math.max(0, end - REBUILD_TAIL_BYTES));
    f.skippedFrom = null;
    f.pending = [];
    f.pendingBytes = 0;
    const offset = slice ? slice.offset : end;
    this.post({ type: 'close', id });
    this.post({ type: 'open', id, cols: f.cols, rows: f.rows, offset });
    f.fedOffset = offset;
    f.parsedOffset = offset;
    if (slice && slice.data.length) {
      this.post({ type: 'data', id, data: slice.data });
      f.fedOffset += slice.data.length;
    }
  }

  close(id: string): void {
    if (!this.feeds.delete(id)) return;
    this.post({ type: 'close', id });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const [id, f] of this.feeds) this.flushOne(id, f);
    });
  }

  private flushOne(id: string, f: Feed): void {
    if (f.pendingBytes === 0) return;
    const data = f.pending.length === 1 ? f.pending[0] : Buffer.concat(f.pending, f.pendingBytes);
    f.fedOffset += f.pendingBytes;
    f.pending = [];
    f.pendingBytes = 0;
    this.post({ type: 'data', id, data });
  }

  private post(msg: ScreenRequest): void {
    if (!this.disposed) this.worker.postMessage(msg);
  }

  private onReply(msg: ScreenReply): void {
    if (msg.type === 'progress') {
      const f = this.feeds.get(msg.id);
      if (f && msg.consumed > f.parsedOffset) f.parsedOffset = msg.consumed;
      return;
    }
    if (msg.type === 'text') {
      const done = this.textWaiting.get(msg.requestId);
      this.textWaiting.delete(msg.requestId);
      done?.(msg.lines ?? null);
      return;
    }
    if (msg.type !== 'snapshot') return;
    const w = this.waiting.get(msg.requestId);
    if (!w) return;
    this.waiting.delete(msg.requestId);
    clearTimeout(w.timer);
    if (msg.error || msg.data === undefined) w.reject(new Error(msg.error ?? 'no snapshot'));
    else w.resolve({ offset: msg.offset!, cols: msg.cols!, rows: msg.rows!, data: msg.data });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new Error('screen service disposed'));
    }
    this.waiting.clear();
    for (const done of this.textWaiting.values()) done(null);
    this.textWaiting.clear();
    void this.worker.terminate();
  }
}
