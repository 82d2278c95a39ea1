import { IDisposable } from '../common/disposable';
import { Event } from '../common/events';
import type { InputTarget } from './FastInput';
import type { FastOutput } from './FastOutput';

export interface SpawnOptions {
  /** Absolute path of the program; never a shell string. */
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  cols: number;
  rows: number;
}

export interface PtyExit {
  /** The program's exit status; null when a signal ended it (as Node's child_process has it). */
  exitCode: number | null;
  signal: number | null;
}

/** One program running in its own pseudo-terminal. */
export interface PtyProcess extends IDisposable {
  readonly pid: number;
  /**
   * The program's terminal (the slave, `/dev/pts/N`) while this process still
   * holds it, so that the number cannot be another terminal's; null once it
   * let go (by the time the exit is reported) or where there is none.
   */
  readonly ttyPath: string | null;
  /** Output bytes, in order. Every byte written before exit arrives before `onExit`. */
  readonly onData: Event<Buffer>;
  readonly onExit: Event<PtyExit>;
  /**
   * The program is gone, its output not yet drained: the last moment
   * `ttyPath` is still held (onExit comes after the drain, once it is not).
   */
  readonly onExiting: Event<void>;
  /**
   * Input for the program. False, writing nothing, when the program has left
   * too much earlier input unread (MAX_PENDING_INPUT_BYTES in writer.ts).
   */
  write(data: string | Buffer): boolean;
  resize(cols: number, rows: number): void;
  /** The native output path, where this process has one (see FastOutput). */
  readonly fastOutput?: FastOutput | null;
  /** Where the native input path writes, while this process has one (see FastInput); else null. */
  inputTarget?(): InputTarget | null;
  /** Stops reading output (back-pressure); `resume` reads again. */
  pause(): void;
  resume(): void;
}

export interface PtyBackend {
  spawn(options: SpawnOptions): PtyProcess;
}
