import { Worker } from 'node:worker_threads';
import { compiledWorkerPath } from '../common/workers';
import { OutputKind, packOutput, packOutputAsync, packSnapshot, worthPacking, type CodecSettings } from './codec';
import {
  PACKER_PROTOCOL,
  type CheckpointRequest,
  type PackRequest,
  type RecompactJob,
  type RecompactRequest,
  type PackWhat,
  type WorkerReply,
} from './packerProtocol';

/** Bytes to pack, as the views they are held in. */
export interface PackInput {
  what: PackWhat;
  parts: Buffer[];
}

export interface Packed {
  kind: OutputKind;
  data: Buffer;
}

export interface RecompactResult {
  /** Rows from the job's `from` to here are raw and final: the run (`source`) starts here. */
  settledTo: number;
  source: Array<[number, number, number]>;
  rows: Array<{ start: number; end: number; kind: OutputKind; data: Buffer }>;
  error?: string;
}

/** Compresses rows: in a worker thread, or on the calling thread when none can run. */
export interface Packer {
  readonly name: 'worker' | 'inline';
  /** Packs the items, one result each, in order. Rejects if the packer broke: use another. */
  pack(items: PackInput[]): Promise<Packed[]>;
  dispose(): void;
}

function concat(parts: Buffer[]): Buffer {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function packOne(item: PackInput, codec: CodecSettings): Packed {
  const raw = concat(item.parts);
  if (item.what === 'snapshot') return { kind: OutputKind.GZIP, data: packSnapshot(raw, codec) };
  return packOutput(raw, OutputKind.PIECE, codec);
}

/** Packs on the calling thread (the event loop): a synchronous flush, or no worker. */
export class InlinePacker implements Packer {
  readonly name = 'inline';

  constructor(private readonly codec: CodecSettings) {}

  packNow(items: PackInput[]): Packed[] {
    return items.map((item) => packOne(item, this.codec));
  }

  async pack(items: PackInput[]): Promise<Packed[]> {
    return this.packNow(items);
  }

  /** Recompresses `raw` as segments on libuv's thread pool (compaction without a worker). */
  async segments(raw: Buffer, count: number): Promise<Packed[]> {
    const out: Packed[] = [];
    for (let i = 0; i < count; i++) {
      const a = Math.floor((raw.length * i) / count);
      const b = Math.floor((raw.length * (i + 1)) / count);
      out.push(await packOutputAsync(raw.subarray(a, b), OutputKind.SEGMENT, this.codec));
    }
    return out;
  }

  dispose(): void {}
}

/** Where the compiled worker is (null if not built). */
export function compressWorkerPath(): string | null {
  return compiledWorkerPath(__dirname, 'compressWorker.js');
}

/** Pieces from this size on are probed on the calling thread, and kept out of the worker if they would not shrink. */
const PROBE_HERE_MIN_BYTES = 128 * 1024;

/** A flood may pack tens of megabytes at once; a buffer that large is not kept for reuse. */
const SPARE_MAX_BYTES = 8 * 1024 * 1024;

interface Waiting {
  resolve: (reply: WorkerReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | null;
}

/**
 * One compression worker thread (server/store/compressWorker.ts). A request
 * copies its bytes once into a buffer it transfers (~0.3 ms/MB on the event
 * loop); replies transfer theirs. (Views of SharedArrayBuffers avoided the
 * copy, but postMessage then stalled 5-80 ms at times while the other
 * worker held the same buffers.)
 */
export class CompressWorker implements Packer {
  readonly name = 'worker';
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 1;
  private broken: Error | null = null;
  /** A buffer handed back by the worker, for the next request. */
  private spare: ArrayBuffer | null = null;

  /**
   * `timeoutMs`: how long a request may take before the worker is called
   * broken (null: no limit). `nice`: raised niceness of the worker's thread
   * (Linux), for background work that must not compete with the event loop.
   */
  constructor(file: string, codec: CodecSettings, private readonly timeoutMs: number | null, nice = 0) {
    this.worker = new Worker(file, { workerData: { codec, nice } });
    this.worker.unref();
    this.worker.on('message', (msg: WorkerReply) => this.onMessage(msg));
    this.worker.on('error', (err) => this.breakWith(err));
    this.worker.on('exit', (code) => this.breakWith(new Error(`compression worker exited (code ${code})`)));
  }

  get isBroken(): boolean {
    return this.broken !== null;
  }

  async pack(all: PackInput[]): Promise<Packed[]> {
    // Pieces that would not shrink (a flood of base64 or binary) are settled here, by the probe, and never
    // cross to the worker: that spares two copies and a round trip per row, most of a flood's cost.
    // Only large pieces (a flood's rows): a hundred sessions' 16 KiB ticks probed here cost the event loop ~5 ms per flush.
    const results: Array<Packed | null> = all.map((item) => {
      if (item.what !== 'piece' || item.parts.reduce((n, p) => n + p.length, 0) < PROBE_HERE_MIN_BYTES) return null;
      const raw = concat(item.parts);
      return worthPacking(raw) ? null : { kind: OutputKind.RAW, data: raw };
    });
    const items = all.filter((_, i) => results[i] === null);
    if (items.length === 0) return results as Packed[];
    const packed = await this.packInWorker(items);
    let next = 0;
    return results.map((r) => r ?? packed[next++]);
  }

  private async packInWorker(items: PackInput[]): Promise<Packed[]> {
    const total = items.reduce((n, item) => n + item.parts.reduce((m, p) => m + p.length, 0), 0);
    // The last request's buffer comes back with its reply: reusing it spares the page faults of fresh memory
    // (a 1.6 MB buffer took up to 3 ms to fill when new, 0.2 ms when reused).
    const spare = this.spare;
    this.spare = null;
    // New ones with some headroom, so that a slightly larger flush next time still fits.
    const buffer = spare && spare.byteLength >= total ? spare : new ArrayBuffer(total <= SPARE_MAX_BYTES ? Math.min(SPARE_MAX_BYTES, Math.ceil(total * 1.25)) : total);
    const view = new Uint8Array(buffer);
    const lengths: PackRequest['items'] = [];
    let at = 0;
    for (const item of items) {
      const from = at;
      for (const part of item.parts) {
        view.set(part, at);
        at += part.length;
      }
      lengths.push({ what: item.what, length: at - from });
    }
    const request: PackRequest = { type: 'pack', id: this.nextId++, buffer, items: lengths };
    const reply = await this.request(request, [buffer]);
    if (reply.type !== 'packed') throw new Error(`compression worker answered ${reply.type} to a pack request`);
    this.keepSpare(reply.input);
    if (reply.error) throw new Error(`compression worker failed: ${reply.error}`);
    const all = Buffer.from(reply.buffer);
    let read = 0;
    return reply.results.map((r) => {
      const data = all.subarray(read, read + r.length);
      read += r.length;
      return { kind: r.kind as OutputKind, data };
    });
  }

  private keepSpare(buffer: ArrayBuffer | undefined): void {
    const spare = this.spare;
    if (buffer && buffer.byteLength <= SPARE_MAX_BYTES && buffer.byteLength > (spare?.byteLength ?? 0)) this.spare = buffer;
  }

  /** A PASSIVE checkpoint of `file` on the worker's own connection; resolves with SQLite's frame counts. */
  async checkpoint(file: string): Promise<{ log: number; checkpointed: number }> {
    const request: CheckpointRequest = { type: 'checkpoint', id: this.nextId++, file };
    const reply = await this.request(request);
    if (reply.type !== 'checkpointed') throw new Error(`compression worker answered ${reply.type} to a checkpoint request`);
    if (reply.error) throw new Error(`checkpoint failed: ${reply.error}`);
    return { log: reply.log ?? 0, checkpointed: reply.checkpointed ?? 0 };
  }

  /**
   * Recompresses runs of sessions' rows as segments, reading them on the
   * worker's own connection, in one request. Per job, `source` lists the
   * rows it read, to check they are still there before swapping the result
   * in; a job that failed has `error`.
   */
  async recompact(file: string, jobs: RecompactJob[]): Promise<RecompactResult[]> {
    const request: RecompactRequest = { type: 'recompact', id: this.nextId++, file, jobs };
    const reply = await this.request(request);
    if (reply.type !== 'recompacted') throw new Error(`compression worker answered ${reply.type} to a recompact request`);
    const all = Buffer.from(reply.buffer);
    let at = 0;
    return reply.results.map((result) => ({
      settledTo: result.settledTo,
      source: result.source,
      error: result.error,
      rows: result.rows.map((r) => {
        const data = all.subarray(at, at + r.length);
        at += r.length;
        return { start: r.start, end: r.end, kind: r.kind as OutputKind, data };
      }),
    }));
  }

  dispose(): void {
    this.breakWith(new Error('the store is closed'));
  }

  private request(message: PackRequest | CheckpointRequest | RecompactRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<WorkerReply>((resolvePromise, reject) => {
      let timer: NodeJS.Timeout | null = null;
      if (this.timeoutMs !== null) {
        timer = setTimeout(() => this.breakWith(new Error(`compression worker did not answer in ${this.timeoutMs} ms`)), this.timeoutMs);
        timer.unref();
      }
      this.waiting.set(message.id, { resolve: resolvePromise, reject, timer });
      this.worker.postMessage(message, transfer);
    });
  }

  private onMessage(msg: WorkerReply): void {
    if (msg.type === 'hello') {
      if (msg.protocol !== PACKER_PROTOCOL) {
        this.breakWith(new Error(`compression worker speaks protocol ${msg.protocol}, the store ${PACKER_PROTOCOL}: dist/ is stale, run "npm run build"`));
      }
      return;
    }
    const waiting = this.waiting.get(msg.id);
    if (!waiting) return;
    this.waiting.delete(msg.id);
    if (waiting.timer) clearTimeout(waiting.timer);
    waiting.resolve(msg);
  }

  private breakWith(err: Error): void {
    if (this.broken) return;
    this.broken = err;
    for (const w of this.waiting.values()) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiting.clear();
    void this.worker.terminate().catch(() => undefined);
  }
}
