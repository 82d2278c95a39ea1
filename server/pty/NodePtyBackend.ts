import { closeSync, constants, openSync } from 'node:fs';
import * as pty from 'node-pty';
import { Emitter } from '../common/events';
import { PtyBackend, PtyExit, PtyProcess, SpawnOptions } from './PtyBackend';
import { FastOutput, NativeReader, nativeOutputWanted } from './FastOutput';
import { ReadHandle, ReadThread } from './ReadThread';
import { InputTarget, nativeInputWanted } from './FastInput';
import { PtyWriter } from './writer';

/** A read this big filled the kernel's buffer: more is waiting, the output floods (see ReadThread). */
export const FLOOD_READ_BYTES = 4000;

/** node-pty's socket: its stream handle (libuv), to stop and start its reads. */
interface PtySocket {
  _read?: unknown;
  _handle?: { reading: boolean; readStop(): number; readStart(): number };
}

/**
 * node-pty drops the tail of the output when a program exits right after
 * writing (node-pty #72, #726; about 1 run in 5 here): once the last slave fd
 * closes, the master read can fail with EIO before the kernel has handed over
 * the last buffered bytes. We hold our own fd on the slave side, so the master
 * never sees that hang-up while the program is alive or draining; only after
 * its exit do we release the slave, and the reader thread then takes every
 * byte left up to the hang-up before the exit is reported.
 *
 * Output is read on the event loop while it is light — by the native reader
 * (FastOutput: it also sends each chunk to the clients' sockets itself) where
 * the helper has one, else by node-pty's socket — and by the reader thread
 * (ReadThread) while it floods, where this process can (the native helper is
 * built). Exactly one of them reads at any time: the event loop's reader is
 * stopped before the thread is asked to read, and started again only after
 * the thread has stopped and handed over all it read.
 */
class NodePtyProcess implements PtyProcess, FastOutput {
  private readonly dataEmitter = new Emitter<Buffer>();
  private readonly exitEmitter = new Emitter<PtyExit>();
  readonly onData = this.dataEmitter.event;
  readonly onExit = this.exitEmitter.event;
  private readonly exitingEmitter = new Emitter<void>();
  readonly onExiting = this.exitingEmitter.event;
  private slaveFd: number | null = null;
  private exited = false;
  private disposed = false;
  /** Direct writes to the master fd; null if node-pty does not show it (then its own queued writes). */
  private readonly writer: PtyWriter | null;
  /** The terminal at the reader thread; null if this process cannot use one (or lost it). */
  private reader: ReadHandle | null = null;
  /** The thread reads the output now (else node-pty's socket does). */
  private threadReads = false;
  /** The exit, held until the reader thread has handed over the last bytes. */
  private pendingExit: PtyExit | null = null;
  /** The native reader, reading instead of node-pty's socket; null if there is none (or it failed). */
  private native: NativeReader | null = null;
  /** Paused by the owner: the native reader does not start again on take-back. */
  private paused = false;
  /** How often the output went to the thread (tests, diagnostics). */
  handOffs = 0;
  /** Chunks the native reader read (tests, diagnostics). */
  nativeChunks = 0;

  constructor(private readonly term: pty.IPty, thread: ReadThread | null) {
    const fd = (term as unknown as { _fd?: unknown })._fd;
    this.writer = typeof fd === 'number' ? new PtyWriter(fd) : null;
    try {
      // O_NOCTTY: the daemon must never acquire the agent's terminal as its own.
      this.slaveFd = openSync((term as unknown as { ptsName: string }).ptsName, constants.O_RDWR | constants.O_NOCTTY);
    } catch {
      // The program may already be gone; then there is no tail left to protect.
      this.slaveFd = null;
    }
    if (thread && typeof fd === 'number' && this.socket._handle) {
      this.reader = thread.attach(fd, {
        onData: (data) => this.dataEmitter.fire(data),
        onYield: () => this.takeBack(),
        onEnd: (error) => this.onReadEnd(error),
      });
    }
    term.onData((data) => this.onChunk(data as unknown as Buffer));
    // The native reader needs the thread for the drain at exit (and floods): without it, node-pty's socket reads.
    if (this.reader && typeof fd === 'number' && nativeOutputWanted()) {
      this.native = NativeReader.open(
        fd,
        (chunk) => {
          this.nativeChunks++;
          this.onChunk(chunk);
        },
        () => this.onNativeLost(),
      );
      if (this.native) {
        this.stopSocket();
        this.native.start();
      }
    }
    term.onExit(({ exitCode, signal }) => {
      // node-pty's socket is closed by now: whatever it (or the native reader) did not read, the thread reads.
      this.exited = true;
      this.native?.close();
      this.native = null;
      this.writer?.close();
      // The terminal is still ours: whoever acts on the exit with it (the session's leftover sweep) starts now.
      this.exitingEmitter.fire();
      this.releaseSlave();
      // node-pty reports a signalled program as exitCode 0 with the signal: there was no exit status.
      const exit = signal ? { exitCode: null, signal } : { exitCode, signal: null };
      if (this.reader) {
        this.pendingExit = exit;
        this.reader.finish();
      } else {
        this.exitEmitter.fire(exit);
      }
    });
  }

  private get socket(): PtySocket {
    return (this.term as unknown as { _socket: PtySocket })._socket;
  }

  private onChunk(chunk: Buffer): void {
    this.dataEmitter.fire(chunk);
    if (this.reader && !this.threadReads && chunk.length >= FLOOD_READ_BYTES) this.handOff();
  }

  /** node-pty's socket stops reading at once (nothing more is read there); false if it has no handle. */
  private stopSocket(): boolean {
    const socket = this.socket;
    const handle = socket._handle;
    if (!handle) return false;
    // The socket's stream machinery would start reading again through _read: not while another reader reads.
    socket._read = () => undefined;
    handle.reading = false;
    handle.readStop();
    return true;
  }

  private startSocket(): void {
    const socket = this.socket;
    delete socket._read;
    if (socket._handle) {
      socket._handle.reading = true;
      socket._handle.readStart();
    }
  }

  /** The output floods: the event loop's reader stops and the thread reads. */
  private handOff(): void {
    if (this.exited) return;
    if (this.native) this.native.stop();
    else if (!this.stopSocket()) return;
    this.threadReads = true;
    this.handOffs++;
    this.reader!.read();
  }

  /** The thread stopped reading and handed everything over: the event loop's reader reads again. */
  private takeBack(): void {
    if (!this.threadReads) return;
    this.threadReads = false;
    if (this.exited || this.disposed) return;
    if (this.native) {
      if (!this.paused) this.native.start();
    } else {
      this.startSocket();
    }
  }

  /** The native reader failed (it closed itself): node-pty's socket reads, and reports what comes. */
  private onNativeLost(): void {
    this.native = null;
    if (!this.exited && !this.disposed && !this.threadReads) this.startSocket();
  }

  // ---- FastOutput ----

  get fastOutput(): FastOutput | null {
    return this.native ? this : null;
  }

  /** The native reader is let go at the exit and at dispose: while it is here, only a hand-off stops it. */
  get active(): boolean {
    return this.native !== null && !this.threadReads;
  }

  arm(slot: number, fd: number): boolean {
    return this.native?.arm(slot, fd) ?? false;
  }

  disarm(slot: number): void {
    this.native?.disarm(slot);
  }

  sentTo(slot: number): number {
    return this.native?.sentTo(slot) ?? -1;
  }

  /** The thread read the last byte (the hang-up, or the exit's short wait), or was lost. */
  private onReadEnd(error?: string): void {
    this.reader = null;
    if (this.disposed) return;
    const exit = this.pendingExit;
    if (exit) {
      this.pendingExit = null;
      this.exitEmitter.fire(exit);
      return;
    }
    // Lost while the program runs (the thread died, or a read failed): node-pty's socket reads from now on.
    if (error) this.takeBack();
  }

  get pid(): number {
    return this.term.pid;
  }

  /** Only while our own slave fd is open: until then the kernel cannot give the number to another terminal. */
  get ttyPath(): string | null {
    return this.slaveFd === null ? null : (this.term as unknown as { ptsName: string }).ptsName;
  }

  write(data: string | Buffer): boolean {
    if (this.exited || this.disposed) return true;
    if (this.writer) return this.writer.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    // node-pty's own queue (no direct fd): unbounded, as node-pty has it.
    this.term.write(data as string);
    return true;
  }

  /** The master and the writer's flag, for the native input path; null where there is none (or it is off). */
  inputTarget(): InputTarget | null {
    const fd = (this.term as unknown as { _fd?: unknown })._fd;
    if (this.exited || this.disposed || !this.writer || typeof fd !== 'number' || !nativeInputWanted()) return null;
    return { fd, held: this.writer.held };
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
    this.paused = true;
    if (this.native) {
      if (!this.threadReads) this.native.stop();
    } else {
      this.term.pause();
    }
    this.reader?.pause();
  }

  resume(): void {
    this.paused = false;
    if (this.native) {
      if (!this.threadReads) this.native.start();
    } else {
      this.term.resume();
    }
    this.reader?.resume();
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
    this.native?.close();
    this.native = null;
    this.reader?.close();
    this.reader = null;
    this.releaseSlave();
    try {
      // destroy() closes the master fd (kill() would leave it open: node-pty #950).
      (this.term as unknown as { destroy(): void }).destroy();
    } catch {
      // Already torn down by node-pty after exit.
    }
    this.dataEmitter.dispose();
    this.exitEmitter.dispose();
    this.exitingEmitter.dispose();
  }
}

export class NodePtyBackend implements PtyBackend {
  /** `thread`: where floods are read (null: everything on the event loop, by node-pty's socket). */
  constructor(private readonly thread: ReadThread | null = null) {}

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
    return new NodePtyProcess(term, this.thread);
  }
}
