import { writeSync } from 'node:fs';

/** How soon a write the kernel refused (the program is not reading its input) is tried again. */
const RETRY_MS = 2;
/**
 * Input a program may leave unread before more is refused: a paste of a few
 * MB into a program that reads goes through; a client streaming into one
 * that does not read cannot grow the daemon without bound.
 */
export const MAX_PENDING_INPUT_BYTES = 4 * 1024 * 1024;

/**
 * Input to a PTY, written on the calling thread. node-pty writes through
 * libuv's thread pool (`fs.write`): a keystroke then waits for a pool thread
 * before it reaches the program, ~10–20 µs of every echo. The master fd is
 * non-blocking, so a direct write never stalls the event loop: what the
 * kernel does not take at once (EAGAIN: the input buffer is full because the
 * program is not reading) waits here, in order, and is retried — up to
 * MAX_PENDING_INPUT_BYTES; beyond that, input is refused, not queued.
 */
export class PtyWriter {
  private queue: Buffer[] = [];
  /** Bytes in `queue`. */
  private pending = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /**
   * Shared with the native input path (FastInput.ts): non-zero while input
   * waits here or the writer is closed, so that a client's keystrokes are not
   * written ahead of what waits (they are handed to `write` instead).
   */
  readonly held = new Int32Array(1);

  constructor(private readonly fd: number) {}

  /**
   * Writes `data` (kept by reference until written: the caller must not
   * change it). False, with nothing written or queued, when earlier input is
   * still waiting and `data` would take the wait past MAX_PENDING_INPUT_BYTES.
   */
  write(data: Buffer): boolean {
    if (this.closed || data.length === 0) return true;
    if (this.queue.length > 0) {
      if (this.pending + data.length > MAX_PENDING_INPUT_BYTES) return false;
      this.enqueue(data);
      return true;
    }
    const written = this.tryWrite(data);
    if (written < data.length) {
      this.enqueue(data.subarray(written));
      this.arm();
    }
    return true;
  }

  private enqueue(data: Buffer): void {
    this.queue.push(data);
    this.pending += data.length;
    this.held[0] = 1;
  }

  /** Drops what is queued (the program is gone) and writes nothing more. */
  close(): void {
    this.closed = true;
    this.held[0] = 1;
    this.queue = [];
    this.pending = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Bytes the kernel took; 0 on EAGAIN. Any other error (EIO, EBADF: the program or fd is gone) closes the writer. */
  private tryWrite(data: Buffer): number {
    try {
      return writeSync(this.fd, data);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 0;
      this.close();
      return data.length;
    }
  }

  private arm(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.drain();
    }, RETRY_MS);
    this.timer.unref();
  }

  private drain(): void {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0];
      const written = this.tryWrite(head);
      if (this.closed) return;
      this.pending -= written;
      if (written < head.length) {
        this.queue[0] = head.subarray(written);
        this.arm();
        return;
      }
      this.queue.shift();
    }
    if (this.queue.length === 0 && !this.closed) this.held[0] = 0;
  }
}
