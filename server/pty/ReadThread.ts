import { Worker } from 'node:worker_threads';
import { nativeHelper } from '../common/native';
import { compiledWorkerPath } from '../common/workers';
import type { ReadReply, ReadRequest } from './readProtocol';

/** How long a closed program's terminal is read for what is left, when something else still holds it open. */
export const FINISH_WAIT_MS = 250;

/** What the owner of a terminal hears from the reader thread. */
export interface ReadTarget {
  /** Output bytes, in order. */
  onData(data: Buffer): void;
  /** The thread stopped reading (output went quiet) and handed over every byte: the owner reads again. */
  onYield(): void;
  /** No more output; `error`: the read failed (not the hang-up), or the reader thread was lost. */
  onEnd(error?: string): void;
}

/** One terminal read by the thread. */
export interface ReadHandle {
  /** The owner has stopped reading: the thread reads now, until the output goes quiet (`onYield`). */
  read(): void;
  pause(): void;
  resume(): void;
  /** The program is gone: read what is left, then `onEnd`. */
  finish(): void;
  /** Stops at once; no more calls to the target. */
  close(): void;
}

/**
 * A thread that reads terminals whose output floods (server/pty/readWorker.ts).
 *
 * The kernel hands a terminal's output over ~4 KiB at a time and refills only
 * once it is read, so a reader that spends ~60 µs on each chunk — the event
 * loop does: fan-out, ring, store — caps a flood at ~60 MB/s however fast the
 * program writes (measured: bench/core.ts, docs/PERFORMANCE.md). On this
 * thread the chunks cost a few microseconds and reach the event loop in
 * batches, whose costs are paid per batch. But a keystroke's echo through
 * the thread takes one more hop between threads (~30 µs), so a terminal is
 * read by the event loop while its output is light; its owner hands it here
 * when a read fills the kernel's buffer, and gets it back once the output has
 * been quiet for 50 ms.
 *
 * One thread for every session; it reads a duplicate of each terminal's
 * descriptor (the native helper's `dup`) and closes it itself, while node-pty
 * keeps and closes the original. Without the helper (or the compiled worker)
 * `attach` says no and terminals are read on the event loop only.
 */
export class ReadThread {
  private worker: Worker | null = null;
  private readonly targets = new Map<number, ReadTarget>();
  private nextId = 1;
  private broken = false;

  /** Starts reading `fd` for `target`; null if this process cannot (then the caller reads it itself). */
  attach(fd: number, target: ReadTarget): ReadHandle | null {
    const dup = nativeHelper()?.dup;
    if (this.broken || !dup) return null;
    const worker = this.ensureWorker();
    if (!worker) return null;
    let own: number;
    try {
      own = dup(fd);
    } catch {
      return null;
    }
    const id = this.nextId++;
    this.targets.set(id, target);
    this.post({ type: 'add', id, fd: own });
    return {
      read: () => this.post({ type: 'read', id }),
      pause: () => this.post({ type: 'pause', id }),
      resume: () => this.post({ type: 'resume', id }),
      finish: () => this.post({ type: 'finish', id, waitMs: FINISH_WAIT_MS }),
      close: () => {
        if (!this.forget(id)) return;
        this.post({ type: 'close', id });
      },
    };
  }

  private ensureWorker(): Worker | null {
    if (this.worker) {
      this.worker.ref();
      return this.worker;
    }
    const file = compiledWorkerPath(__dirname, 'readWorker.js');
    if (!file) return null;
    const worker = new Worker(file, { resourceLimits: { maxYoungGenerationSizeMb: 8 } });
    worker.on('message', (msg: ReadReply) => this.onReply(msg));
    worker.on('error', (err) => this.lose(err.message));
    worker.on('exit', (code) => this.lose(`exited with code ${code}`));
    this.worker = worker;
    return worker;
  }

  private onReply(msg: ReadReply): void {
    const target = this.targets.get(msg.id);
    if (!target) return;
    if (msg.type === 'data') {
      target.onData(Buffer.from(msg.data));
      // Handled (the target works synchronously): the next batch may come.
      if (this.targets.has(msg.id)) this.post({ type: 'ack', id: msg.id });
      return;
    }
    if (msg.type === 'yield') return target.onYield();
    this.forget(msg.id);
    target.onEnd(msg.error);
  }

  /** Stops serving `id`; an idle thread does not keep the process alive. False if it was not served. */
  private forget(id: number): boolean {
    if (!this.targets.delete(id)) return false;
    if (this.targets.size === 0) this.worker?.unref();
    return true;
  }

  /** The thread is gone: every terminal it read is told, and new ones are read on the event loop. */
  private lose(why: string): void {
    if (this.broken) return;
    this.broken = true;
    this.worker = null;
    const targets = [...this.targets.values()];
    this.targets.clear();
    for (const t of targets) t.onEnd(`reader thread ${why}`);
  }

  private post(msg: ReadRequest): void {
    this.worker?.postMessage(msg);
  }

  /** Ends the thread; terminals still attached are not told (their owners are gone first). */
  async dispose(): Promise<void> {
    const worker = this.worker;
    this.broken = true;
    this.worker = null;
    this.targets.clear();
    if (worker) await worker.terminate();
  }
}
