import { closeSync, constants, openSync } from 'node:fs';
import * as pty from 'node-pty';
import { Emitter } from '../common/events';
import { PtyBackend, PtyExit, PtyProcess, SpawnOptions } from './PtyBackend';
import { PtyWriter } from './writer';

/**
 * node-pty drops the tail of the output when a program exits right after
 * writing (node-pty #72, #726; about 1 run in 5 here): once the last slave fd
 * closes, the master read can fail with EIO before the kernel has handed over
 * the last buffered bytes. We hold our own fd on the slave side, so the master
 * never sees that hang-up while the program is alive or draining: node-pty
 * then reads every byte and ends the stream itself (its 200 ms close timer
 * after the child is reaped). Only after its exit do we release the slave.
 */
class NodePtyProcess implements PtyProcess {
  private readonly dataEmitter = new Emitter<Buffer>();
  private readonly exitEmitter = new Emitter<PtyExit>();
  readonly onData = this.dataEmitter.event;
  readonly onExit = this.exitEmitter.event;
  private slaveFd: number | null = null;
  private exited = false;
  private disposed = false;
  /** Direct writes to the master fd; null if node-pty does not show it (then its own queued writes). */
  private readonly writer: PtyWriter | null;

  constructor(private readonly term: pty.IPty) {
    const fd = (term as unknown as { _fd?: unknown })._fd;
    this.writer = typeof fd === 'number' ? new PtyWriter(fd) : null;
    try {
      // O_NOCTTY: the daemon must never acquire the agent's terminal as its own.
      this.slaveFd = openSync((term as unknown as { ptsName: string }).ptsName, constants.O_RDWR | constants.O_NOCTTY);
    } catch {
      // The program may already be gone; then there is no tail left to protect.
      this.slaveFd = null;
    }
    term.onData((data) => this.dataEmitter.fire(data as unknown as Buffer));
    term.onExit(({ exitCode, signal }) => {
      this.exited = true;
      this.writer?.close();
      this.releaseSlave();
      this.exitEmitter.fire({ exitCode, signal: signal ? signal : null });
    });
  }

  get pid(): number {
    return this.term.pid;
  }

  write(data: string | Buffer): void {
    if (this.exited || this.disposed) return;
    if (this.writer) this.writer.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    else this.term.write(data as string);
  }

  resize(cols: number, rows: number): void {
    if (this.exited || this.disposed) return;
    try {
      this.term.resize(cols, rows);
    } catch {
      // The fd may close between our check and the ioctl when the program exits; nothing to resize then.
    }
  }

  pause(): void {
    this.term.pause();
  }

  resume(): void {
    this.term.resume();
  }

  private releaseSlave(): void {
    if (this.slaveFd === null) return;
    const fd = this.slaveFd;
    this.slaveFd = null;
    try {
      closeSync(fd);
    } catch {
      // Already closed: nothing held.
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.writer?.close();
    this.releaseSlave();
    try {
      // destroy() closes the master fd (kill() would leave it open: node-pty #950).
      (this.term as unknown as { destroy(): void }).destroy();
    } catch {
      // Already torn down by node-pty after exit.
    }
    this.dataEmitter.dispose();
    this.exitEmitter.dispose();
  }
}

export class NodePtyBackend implements PtyBackend {
  spawn(options: SpawnOptions): PtyProcess {
    const term = pty.spawn(options.file, options.args, {
      name: options.env.TERM ?? 'xterm-256color',
      cols: options.cols,
      rows: options.rows,
      cwd: options.cwd,
      env: options.env,
      // null: raw Buffers, so multi-byte characters split across reads stay intact for clients.
      encoding: null,
    } as pty.IPtyForkOptions);
    return new NodePtyProcess(term);
  }
}
