import { closeSync } from 'node:fs';
import { NativeHelper, nativeHelper } from '../common/native';

/**
 * Where a client's keystrokes go on the native input path: the terminal's
 * master and its writer's `held` flag (PtyWriter.held: non-zero while input
 * waits there, or the writer is closed).
 */
export interface InputTarget {
  readonly fd: number;
  readonly held: Int32Array;
}

/** AGENTD_NATIVE_INPUT=off turns the native input path off (every frame is read by `ws`). */
export function nativeInputWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.AGENTD_NATIVE_INPUT !== 'off';
}

/**
 * Called only when JavaScript must act: the reader stopped (something on the
 * socket is not its kind, or the terminal did not take it all), so JavaScript
 * reads the socket again. `runs`: runs of keystrokes written since it was last
 * told (`take`); -1 if the socket's stream could not be kept whole (end the
 * connection). `rest`: payload bytes the terminal did not take (the program is
 * not reading, or the writer holds input back), for JavaScript's writer, in
 * order.
 */
export type OnNativeInput = (runs: number, rest: Buffer | undefined, stopped: boolean) => void;

type InputCalls = Required<Pick<NativeHelper, 'inStart' | 'inStop' | 'inTake' | 'inClose'>>;

/**
 * One client socket's native input reader (native/helper.c, in*).
 *
 * While started, the helper looks at what the client sent, on the event
 * loop's own thread, and takes off the socket only a run of whole binary
 * frames (masked, unfragmented, at most 64 KiB each), writing their payloads
 * to the terminal without running any JavaScript: the bookkeeping (activity,
 * keep-alive) asks later (`take`), so that nothing runs between a keystroke
 * and its echo but the kernel and the echoing program. Anything else — text
 * and control frames, a frame not all there yet, the end of the stream —
 * stays on the socket, the reader stops, and `ws` reads from exactly there:
 * the socket's stream stays whole and in order. The rules for when it may start (WsClient.startInput,
 * Session.offerNativeInput):
 * - JavaScript is not reading the socket meanwhile, and `ws` is between
 *   frames with nothing buffered;
 * - only the client that typed last, so that its keystrokes cannot change
 *   which client's size governs the terminal.
 */
export class NativeInput {
  private closed = false;

  private constructor(
    private readonly calls: InputCalls,
    private readonly handle: object,
  ) {}

  /** A reader of a duplicate of the socket `fd` (closed by the reader); null where the helper cannot. */
  static open(fd: number, onInput: OnNativeInput): NativeInput | null {
    const h = nativeHelper();
    if (!h?.dup || !h.inOpen || !h.inStart || !h.inStop || !h.inTake || !h.inClose) return null;
    const calls: InputCalls = { inStart: h.inStart, inStop: h.inStop, inTake: h.inTake, inClose: h.inClose };
    let own: number;
    try {
      own = h.dup(fd);
    } catch {
      return null;
    }
    try {
      return new NativeInput(calls, h.inOpen(own, onInput));
    } catch {
      closeSync(own);
      return null;
    }
  }

  /** Starts taking frames for `target`; false if it could not (its descriptor is gone). */
  start(target: InputTarget): boolean {
    if (this.closed) return false;
    try {
      this.calls.inStart(this.handle, target.fd, target.held);
      return true;
    } catch {
      return false;
    }
  }

  /** Runs of keystrokes written since the last `take` or `onInput` (0 once closed). */
  take(): number {
    return this.closed ? 0 : this.calls.inTake(this.handle);
  }

  /** Stops taking frames and lets go of the terminal. */
  stop(): void {
    if (!this.closed) this.calls.inStop(this.handle);
  }

  /** Stops for good and closes its descriptors. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.calls.inClose(this.handle);
  }
}
