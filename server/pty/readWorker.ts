import { performance } from 'node:perf_hooks';
import { ReadStream } from 'node:tty';
import { parentPort } from 'node:worker_threads';
import type { ReadReply, ReadRequest } from './readProtocol';

/**
 * The PTY reader thread (see ReadThread). A terminal is read here while its
 * output floods: in the kernel's chunks of ~4 KiB, copied into one buffer,
 * handed to the event loop one batch at a time — the first chunk at once,
 * then whatever came while the event loop was busy with the last batch. Once
 * the output has been quiet for a moment the thread stops reading it and
 * says so (`yield`): the event loop reads it again itself, one thread hop
 * less for a keystroke's echo.
 */

/** A batch handed over at once is at most this big (the event loop's work per batch stays a few ms). */
const MAX_BATCH_BYTES = 256 * 1024;
/** Reading stops while this much waits for the event loop (the program then waits for us, as at a terminal). */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** The first size of a terminal's pending buffer (it doubles as needed, and is let go when output goes quiet). */
const INITIAL_PENDING_BYTES = 64 * 1024;
/** Output quiet this long hands the terminal back to the event loop. */
const YIELD_AFTER_MS = 50;

/** One read buffer for every terminal: each read is copied out of it at once. */
const readBuffer = Buffer.allocUnsafe(64 * 1024);

interface Reader {
  id: number;
  stream: ReadStream;
  /** Bytes read and not handed over yet: pending[0, pendingBytes). */
  pending: Buffer | null;
  pendingBytes: number;
  /** A batch was handed over and not acknowledged yet. */
  inFlight: boolean;
  /** The thread reads this terminal (else the event loop does). */
  reading: boolean;
  /** Paused by request. */
  paused: boolean;
  /** Reading stopped because too much is pending. */
  full: boolean;
  /** The program is gone: read to the hang-up, then `end`. */
  finishing: boolean;
  /** The stream is closed: `end` follows the last batch. */
  ended: boolean;
  error?: string;
  lastReadAt: number;
  timer: NodeJS.Timeout | null;
}

const port = parentPort;
if (!port) throw new Error('readWorker runs as a worker thread');
const readers = new Map<number, Reader>();

function send(msg: ReadReply, transfer?: ArrayBuffer[]): void {
  port!.postMessage(msg, transfer);
}

/** Starts or stops the stream's reads to match what the reader wants. */
function setFlow(r: Reader): void {
  if (r.ended) return;
  const want = (r.reading || r.finishing) && !r.paused && !r.full;
  if (want && r.stream.isPaused()) r.stream.resume();
  else if (!want && !r.stream.isPaused()) r.stream.pause();
}

function onRead(r: Reader, n: number, buf: Buffer): boolean {
  const need = r.pendingBytes + n;
  if (!r.pending || r.pending.length < need) {
    const grown = Buffer.allocUnsafe(Math.max(INITIAL_PENDING_BYTES, 2 ** Math.ceil(Math.log2(need))));
    if (r.pending) r.pending.copy(grown, 0, 0, r.pendingBytes);
    r.pending = grown;
  }
  buf.copy(r.pending, r.pendingBytes, 0, n);
  r.pendingBytes = need;
  r.lastReadAt = performance.now();
  if (!r.timer && !r.finishing) armQuiet(r, YIELD_AFTER_MS);
  pump(r);
  if (r.pendingBytes >= MAX_PENDING_BYTES) {
    r.full = true;
    setFlow(r);
  }
  return true;
}

/** Hands over the next batch (or the end) if the event loop is free for this reader. */
function pump(r: Reader): void {
  if (r.inFlight) return;
  if (r.pendingBytes > 0) {
    const n = Math.min(r.pendingBytes, MAX_BATCH_BYTES);
    const data = new ArrayBuffer(n);
    r.pending!.copy(Buffer.from(data), 0, 0, n);
    if (n < r.pendingBytes) r.pending!.copyWithin(0, n, r.pendingBytes);
    r.pendingBytes -= n;
    r.inFlight = true;
    send({ type: 'data', id: r.id, data }, [data]);
    if (r.full && r.pendingBytes < MAX_PENDING_BYTES) {
      r.full = false;
      setFlow(r);
    }
    return;
  }
  if (r.ended) {
    forget(r);
    send({ type: 'end', id: r.id, ...(r.error ? { error: r.error } : {}) });
  }
}

/** Checks, `ms` from now, whether the output went quiet: then the terminal goes back to the event loop. */
function armQuiet(r: Reader, ms: number): void {
  r.timer = setTimeout(() => {
    r.timer = null;
    if (!r.reading || r.finishing || r.ended) return;
    const quietFor = performance.now() - r.lastReadAt;
    if (quietFor < YIELD_AFTER_MS || r.inFlight || r.pendingBytes > 0) return armQuiet(r, Math.max(1, YIELD_AFTER_MS - quietFor));
    r.reading = false;
    setFlow(r);
    r.pending = null; // drained and handed back: an idle terminal holds no buffer here
    send({ type: 'yield', id: r.id });
  }, ms);
}

function forget(r: Reader): void {
  if (r.timer) clearTimeout(r.timer);
  r.timer = null;
  r.pending = null;
  readers.delete(r.id);
}

function add(id: number, fd: number): void {
  // `onread`: reads land in one reused buffer, and pause() really stops reading (a plain tty stream reads one more chunk).
  // The callback runs only once reading starts, after `r` exists.
  const stream = new ReadStream(fd, { onread: { buffer: readBuffer, callback: (n: number, buf: Buffer) => onRead(r, n, buf) } } as never);
  stream.pause();
  const r: Reader = {
    id,
    stream,
    pending: null,
    pendingBytes: 0,
    inFlight: false,
    reading: false,
    paused: false,
    full: false,
    finishing: false,
    ended: false,
    lastReadAt: 0,
    timer: null,
  };
  readers.set(id, r);
  // EIO is the hang-up: the last program holding the terminal is gone and everything was read.
  r.stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code && err.code !== 'EIO') r.error = err.code;
  });
  r.stream.on('close', () => {
    r.ended = true;
    pump(r);
  });
}

function onRequest(msg: ReadRequest): void {
  if (msg.type === 'add') return add(msg.id, msg.fd);
  const r = readers.get(msg.id);
  if (!r) return;
  switch (msg.type) {
    case 'read':
      r.reading = true;
      r.lastReadAt = performance.now();
      if (!r.timer && !r.finishing) armQuiet(r, YIELD_AFTER_MS);
      setFlow(r);
      break;
    case 'ack':
      r.inFlight = false;
      pump(r);
      break;
    case 'pause':
    case 'resume':
      r.paused = msg.type === 'pause';
      setFlow(r);
      break;
    case 'finish':
      if (r.finishing) break;
      r.finishing = true;
      r.paused = false;
      if (r.timer) clearTimeout(r.timer);
      // Whatever still holds the terminal (a program that left the session's tree) is not waited for long.
      r.timer = setTimeout(() => r.stream.destroy(), msg.waitMs);
      setFlow(r);
      break;
    case 'close':
      forget(r);
      r.stream.removeAllListeners();
      r.stream.on('error', () => undefined);
      r.stream.destroy();
      break;
  }
}

port.on('message', onRequest);
