import { Worker } from 'node:worker_threads';
import { compiledWorkerPath } from '../common/workers';
import { IDisposable } from '../common/disposable';
import type { ScreenReply, ScreenRequest } from './screenProtocol';

export interface Snapshot {
  offset: number;
  cols: number;
  rows: number;
  data: string;
}

/**
 * Bytes a session may have in flight to the worker (fed, not parsed yet)
 * before the model is declared stale instead of fed more: a guard for many
 * sessions streaming at once. The worker parses ~25–50 MB/s; ScreenKeeper
 * already stops feeding a single session's flood.
 */
const MAX_BACKLOG_BYTES = 4 * 1024 * 1024;
const SNAPSHOT_TIMEOUT_MS = 10_000;

function workerPath(): string {
  const file = compiledWorkerPath(__dirname, 'screenWorker.js');
  if (!file) throw new Error(`screen worker not built: run "npm run build" (looked beside ${__dirname} and in dist/)`);
  return file;
}

interface Feed {
  /** Offset of the next byte the worker will see. */
  fedOffset: number;
  /** Offset up to which the worker has parsed. */
  parsedOffset: number;
  /** Bytes were not fed (a flood, or a worker too far behind): the model must be rebuilt before it is read. */
  stale: boolean;
}

/**
 * The main-thread side of the screen worker: a thin, ordered transport. What
 * to feed and when is ScreenKeeper's business; this only refuses to queue
 * more than the worker can take and says so (`isStale`).
 */
export class ScreenService implements IDisposable {
  private readonly worker: Worker;
  private readonly feeds = new Map<string, Feed>();
  private readonly waiting = new Map<number, { resolve: (s: Snapshot) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly textWaiting = new Map<number, (lines: string[] | null) => void>();
  private nextRequest = 1;
  private disposed = false;
  /** The background jobs' queue (see inTurn). */
  private turn: Promise<void> = Promise.resolve();

  constructor() {
    this.worker = new Worker(workerPath(), { resourceLimits: { maxYoungGenerationSizeMb: 4 } });
    this.worker.unref();
    this.worker.on('message', (msg: ScreenReply) => this.onReply(msg));
    this.worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  /**
   * Runs background work (storing screens) one job at a time, so that it
   * never floods the worker; what a client waits for does not queue here.
   */
  inTurn(job: () => Promise<void>): Promise<void> {
    const run = this.turn.then(job);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Opens (or replaces) a model at stream offset `offset`, from a stored serialized screen `base` if given, then `data`. */
  open(id: string, opts: { cols: number; rows: number; offset: number; base?: string; data?: Buffer }): void {
    if (this.feeds.has(id)) this.post({ type: 'close', id });
    this.feeds.set(id, { fedOffset: opts.offset, parsedOffset: opts.offset, stale: false });
    this.post({ type: 'open', id, cols: opts.cols, rows: opts.rows, offset: opts.offset, base: opts.base });
    if (opts.data?.length) this.feed(id, opts.data);
  }

  has(id: string): boolean {
    return this.feeds.has(id);
  }

  /** The model missed bytes (or will): it must be rebuilt (`open` again) before it is read. */
  isStale(id: string): boolean {
    return this.feeds.get(id)?.stale ?? false;
  }

  markStale(id: string): void {
    const f = this.feeds.get(id);
    if (f) f.stale = true;
  }

  /**
   * Hands the next bytes of the stream to the model. With `transfer`, `data`
   * (which must own its whole ArrayBuffer) moves to the worker without a
   * copy and is unusable here afterwards. Not fed (the model goes stale) if
   * the worker is too far behind.
   */
  feed(id: string, data: Buffer, opts: { transfer?: boolean } = {}): void {
    const f = this.feeds.get(id);
    if (!f || f.stale) return;
    if (f.fedOffset - f.parsedOffset + data.length > MAX_BACKLOG_BYTES) {
      f.stale = true;
      return;
    }
    f.fedOffset += data.length;
    const transfer = opts.transfer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? [data.buffer as ArrayBuffer] : undefined;
    this.post({ type: 'data', id, data }, transfer);
  }

  resize(id: string, cols: number, rows: number): void {
    if (!this.feeds.has(id)) return;
    this.post({ type: 'resize', id, cols, rows });
  }

  /** The screen at the end of what was fed (read a stale model only knowingly: ScreenKeeper rebuilds it first). */
  snapshot(id: string): Promise<Snapshot> {
    if (!this.feeds.has(id)) return Promise.reject(new Error(`no screen for ${id}`));
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
    if (!this.feeds.has(id)) return Promise.resolve(null);
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

  close(id: string): void {
    if (!this.feeds.delete(id)) return;
    this.post({ type: 'close', id });
  }

  private post(msg: ScreenRequest, transfer?: ArrayBuffer[]): void {
    if (!this.disposed) this.worker.postMessage(msg, transfer);
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
