/** Messages between the event loop (ReadThread) and the PTY reader thread (readWorker). */

export type ReadRequest =
  /** Adopt `fd` (the thread's own duplicate: it closes it when done), not reading it yet. */
  | { type: 'add'; id: number; fd: number }
  /** The event loop stopped reading this terminal: the thread reads it now (until quiet, then `yield`). */
  | { type: 'read'; id: number }
  /** The event loop has handled the last batch of `id`: the next may come. */
  | { type: 'ack'; id: number }
  /** Stop reading (back-pressure) or read again. */
  | { type: 'pause' | 'resume'; id: number }
  /** The program is gone: read what is left until the terminal hangs up (at most `waitMs`), then `end`. */
  | { type: 'finish'; id: number; waitMs: number }
  /** Stop and close at once, nothing more is wanted. */
  | { type: 'close'; id: number };

export type ReadReply =
  /** Output bytes of `id`, in order (the ArrayBuffer is transferred). */
  | { type: 'data'; id: number; data: ArrayBuffer }
  /** Output went quiet: the thread stopped reading `id`, every byte it read was handed over; the event loop reads again. */
  | { type: 'yield'; id: number }
  /** No more output will come for `id`; `error` is the read error's code if it was not the hang-up. */
  | { type: 'end'; id: number; error?: string };
