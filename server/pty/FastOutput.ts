import { closeSync } from 'node:fs';
import { NativeHelper, nativeHelper } from '../common/native';

/** Sockets one terminal's native reader can send to at once (native/helper.c's OUT_SLOTS). */
export const FAST_SLOTS = 8;

/**
 * The native output path of one terminal, as the session's clients see it.
 *
 * While it is active, the native helper reads the terminal on the event
 * loop's own thread and sends each chunk, as one binary WebSocket frame, to
 * the sockets armed in its slots, before JavaScript sees the chunk. A
 * keystroke's echo then leaves without waiting for V8, node-pty's stream or
 * `ws` (docs/PERFORMANCE.md, stop 14: 3–18 µs of the echo on this machine).
 *
 * The rules that keep the stream exact (ClientSet keeps them):
 * - a socket is armed only while nothing of JavaScript's is queued on it
 *   (SessionClient.fastFd), and disarmed before JavaScript writes to it
 *   again (SessionClient.onWrite), so frames never interleave;
 * - during `onData`, `sentTo(slot)` says how much of the chunk's frame went
 *   to each slot: all of it (the client's position moves on), part of it
 *   (JavaScript sends the rest, then the slot is disarmed) or none (-1 or 0:
 *   JavaScript sends the chunk as usual);
 * - offsets, acks and resynchronisation stay in JavaScript.
 */
export interface FastOutput {
  /** The native reader reads now (not the reader thread, not node-pty): arming is worth it. */
  readonly active: boolean;
  /** Sends later chunks to the socket `fd` too; false if it could not (the slot stays unarmed). */
  arm(slot: number, fd: number): boolean;
  disarm(slot: number): void;
  /** During `onData` only: bytes of the chunk's frame written to `slot`; -1 if none were (0: the socket was full). */
  sentTo(slot: number): number;
}

/** AGENTD_NATIVE_OUTPUT=off turns the native output path off (terminals are then read by node-pty's stream). */
export function nativeOutputWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.AGENTD_NATIVE_OUTPUT !== 'off';
}

/** The size of the WebSocket frame that carries `n` payload bytes from a server (unmasked). */
export function frameLength(n: number): number {
  return n + (n < 126 ? 2 : n <= 0xffff ? 4 : 10);
}

/** The frame that carries `data` as one binary message from a server, as `ws` would send it. */
export function binaryFrame(data: Buffer): Buffer {
  const n = data.length;
  const head = Buffer.alloc(frameLength(n) - n);
  head[0] = 0x82;
  if (n < 126) head[1] = n;
  else if (n <= 0xffff) {
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, data]);
}

type ReaderCalls = Required<Pick<NativeHelper, 'outStart' | 'outStop' | 'outArm' | 'outDisarm' | 'outClose'>>;

/** One terminal's native reader (native/helper.c). */
export class NativeReader {
  private closed = false;

  private constructor(
    private readonly calls: ReaderCalls,
    private readonly handle: object,
    private readonly written: Int32Array,
  ) {}

  /**
   * Reads a duplicate of `fd` (closed by the reader); null where the helper
   * cannot (not built, or built before the reader existed). `onError`: the
   * reader stopped for good (the terminal failed or hung up) and is closed.
   */
  static open(fd: number, onChunk: (chunk: Buffer) => void, onError: (code: string) => void): NativeReader | null {
    const h = nativeHelper();
    if (!h?.dup || !h.outOpen || !h.outStart || !h.outStop || !h.outArm || !h.outDisarm || !h.outClose) return null;
    const calls: ReaderCalls = { outStart: h.outStart, outStop: h.outStop, outArm: h.outArm, outDisarm: h.outDisarm, outClose: h.outClose };
    let own: number;
    try {
      own = h.dup(fd);
    } catch {
      return null;
    }
    const written = new Int32Array(FAST_SLOTS).fill(-1);
    let reader: NativeReader | null = null;
    const onData = (chunk: Buffer | string) => {
      if (typeof chunk !== 'string') return onChunk(chunk);
      reader?.close();
      onError(chunk);
    };
    try {
      reader = new NativeReader(calls, h.outOpen(own, written, onData), written);
    } catch {
      closeSync(own);
      return null;
    }
    return reader;
  }

  start(): void {
    if (!this.closed) this.calls.outStart(this.handle);
  }

  stop(): void {
    if (!this.closed) this.calls.outStop(this.handle);
  }

  arm(slot: number, fd: number): boolean {
    return !this.closed && this.calls.outArm(this.handle, slot, fd);
  }

  disarm(slot: number): void {
    if (!this.closed) this.calls.outDisarm(this.handle, slot);
  }

  sentTo(slot: number): number {
    return this.written[slot];
  }

  /** Stops for good and closes its descriptors (the terminal's and the sockets' duplicates). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.written.fill(-1);
    this.calls.outClose(this.handle);
  }
}
