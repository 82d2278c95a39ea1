import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** agentd's optional native helper (native/helper.c, built by `npm install`). */
export interface NativeHelper {
  /** glibc's malloc_trim(0): true if memory went back to the OS. */
  trim(): boolean;
  /** True where `trim` can do anything (glibc). */
  supported(): boolean;
  /** A close-on-exec duplicate of `fd` (throws with the errno's code). Missing from helpers built before it. */
  dup?(fd: number): number;
  /**
   * A terminal's output reader on the event loop (see pty/FastOutput.ts): takes ownership of `fd`;
   * `written[slot]` tells, during `onData`, how much of the chunk's frame went to each armed socket.
   * `onData` gets a chunk, or the error code (a string) with which the reader stopped for good.
   * Missing from helpers built before it.
   */
  outOpen?(fd: number, written: Int32Array, onData: (chunk: Buffer | string) => void): object;
  outStart?(reader: object): void;
  outStop?(reader: object): void;
  /** Later chunks also go, as binary frames, to (a duplicate of) the socket `fd`; false if it could not be duplicated. */
  outArm?(reader: object, slot: number, fd: number): boolean;
  outDisarm?(reader: object, slot: number): void;
  outClose?(reader: object): void;
  /**
   * A client socket's input reader on the event loop (see pty/FastInput.ts): takes ownership of `fd` (a duplicate of
   * the socket's descriptor). Missing from helpers built before it.
   */
  inOpen?(fd: number, onInput: (runs: number, rest: Buffer | undefined, stopped: boolean) => void): object;
  /** Takes whole binary frames off the socket and writes them to (a duplicate of) `ptyFd` while `held[0]` is 0. */
  inStart?(reader: object, ptyFd: number, held: Int32Array): void;
  inStop?(reader: object): void;
  /** Runs of keystrokes written since JavaScript was last told of them (then zero). */
  inTake?(reader: object): number;
  inClose?(reader: object): void;
}

let helper: NativeHelper | null | undefined;

/** The helper, found beside the sources or the build (dist/), or null if it was not built. */
export function nativeHelper(): NativeHelper | null {
  if (helper !== undefined) return helper;
  helper = null;
  for (let dir = __dirname, i = 0; i < 5; i++, dir = resolve(dir, '..')) {
    const file = join(dir, 'native', 'build', 'Release', 'agentd_native.node');
    if (!existsSync(file)) continue;
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      helper = require(file) as NativeHelper;
    } catch {
      helper = null;
    }
    break;
  }
  return helper;
}
