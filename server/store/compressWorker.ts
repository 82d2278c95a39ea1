/**
 * A compression worker of the store (runs compiled, from dist/server/store/).
 * The store starts two: one packs what a flush writes (latency matters), the
 * other, on its own connection to the database, reads back a session's
 * pieces and recompresses them as segments, and checkpoints the WAL
 * (throughput matters, and a checkpoint's disk writes and fsync stay off the
 * event loop). Requests are served in order.
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { OutputKind, packOutput, packSnapshot, unpackOutput, type CodecSettings } from './codec';
import { pickCompactionRun } from './outputChunks';
import {
  PACKER_PROTOCOL,
  type CheckpointReply,
  type CheckpointRequest,
  type HelloMessage,
  type PackReply,
  type PackRequest,
  type RecompactJob,
  type RecompactReply,
  type RecompactRequest,
  type WorkerRequest,
} from './packerProtocol';

const { codec: settings, nice } = workerData as { codec: CodecSettings; nice: number };
const port = parentPort;
if (!port) throw new Error('compressWorker runs as a worker thread');
if (nice > 0) {
  // On Linux this sets the nice value of this thread alone: background compression then yields the cores to the event loop.
  try {
    setPriority(nice);
  } catch {
    // Not allowed or not supported: run at the process's priority.
  }
}

function pack(req: PackRequest): void {
  let message: PackReply;
  let transfer: ArrayBuffer[] = [];
  try {
    let from = 0;
    const done = req.items.map((item) => {
      const raw = new Uint8Array(req.buffer, from, item.length);
      from += item.length;
      if (item.what === 'snapshot') return { kind: OutputKind.GZIP as number, data: packSnapshot(raw, settings) };
      return packOutput(raw, OutputKind.PIECE, settings);
    });
    // A fresh ArrayBuffer: Buffer's pool must never be transferred.
    const out = new Uint8Array(done.reduce((n, d) => n + d.data.length, 0));
    let at = 0;
    for (const d of done) {
      out.set(d.data, at);
      at += d.data.length;
    }
    message = { type: 'packed', id: req.id, buffer: out.buffer, results: done.map((d) => ({ kind: d.kind, length: d.data.length })), input: req.buffer };
    transfer = [out.buffer, req.buffer];
  } catch (err) {
    message = { type: 'packed', id: req.id, buffer: new ArrayBuffer(0), results: [], error: (err as Error)?.stack ?? String(err) };
  }
  port!.postMessage(message, transfer);
}

let db: Database.Database | null = null;

/** This worker's own connection to the store's database, opened on first use. */
function connection(file: string): Database.Database {
  if (!db) {
    // Loaded here, not at the top: the packing worker never needs it.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const Sqlite = require('better-sqlite3') as typeof Database;
    db = new Sqlite(file, { fileMustExist: true });
    // Reads and PASSIVE checkpoints never wait for a lock; nothing here should.
    db.pragma('busy_timeout = 0');
  }
  return db;
}

function checkpoint(req: CheckpointRequest): void {
  let message: CheckpointReply;
  try {
    const [row] = connection(req.file).pragma('wal_checkpoint(PASSIVE)') as Array<{ busy: number; log: number; checkpointed: number }>;
    message = { type: 'checkpointed', id: req.id, log: row?.log, checkpointed: row?.checkpointed };
  } catch (err) {
    message = { type: 'checkpointed', id: req.id, error: (err as Error)?.stack ?? String(err) };
  }
  port!.postMessage(message);
}

/** Reads a job's rows (raw ones at the front are skipped unread) and recompresses them as segments. */
function recompactJob(file: string, job: RecompactJob): { settledTo: number; source: Array<[number, number, number]>; rows: Array<{ start: number; end: number; kind: number; data: Uint8Array }> } {
  const db = connection(file);
  const meta = db
    .prepare<[string, number, number], { start: number; end: number; compressed: number }>(
      `SELECT start_offset AS start, end_offset AS end, compressed FROM output
       WHERE session_id = ? AND end_offset > ? AND end_offset <= ? ORDER BY end_offset`,
    )
    .all(job.session, job.from, job.to);
  const { settledTo, source } = pickCompactionRun(meta, job.from, job.maxBytes);
  if (source.length === 0) return { settledTo, source, rows: [] };
  const runEnd = source[source.length - 1][1];
  const raw = db
    .prepare<[string, number, number], { compressed: number; data: Buffer }>(
      'SELECT compressed, data FROM output WHERE session_id = ? AND end_offset > ? AND end_offset <= ? ORDER BY end_offset',
    )
    .all(job.session, settledTo, runEnd)
    .map((row) => unpackOutput(row.compressed, row.data));
  const bytes = Buffer.concat(raw);
  if (bytes.length !== runEnd - settledTo) throw new Error(`rows ${settledTo}..${runEnd} changed while read`);
  const count = Math.max(1, Math.floor(bytes.length / job.segmentBytes));
  const out: Array<{ start: number; end: number; kind: number; data: Uint8Array }> = [];
  for (let i = 0; i < count && bytes.length > 0; i++) {
    const a = Math.floor((bytes.length * i) / count);
    const b = Math.floor((bytes.length * (i + 1)) / count);
    const row = packOutput(bytes.subarray(a, b), OutputKind.SEGMENT, settings);
    out.push({ start: settledTo + a, end: settledTo + b, kind: row.kind, data: row.data });
  }
  return { settledTo, source, rows: out };
}

function recompact(req: RecompactRequest): void {
  const results: RecompactReply['results'] = [];
  const packed: Uint8Array[] = [];
  for (const job of req.jobs) {
    try {
      const { settledTo, source, rows } = recompactJob(req.file, job);
      results.push({ settledTo, source, rows: rows.map((r) => ({ start: r.start, end: r.end, kind: r.kind, length: r.data.length })) });
      packed.push(...rows.map((r) => r.data));
    } catch (err) {
      results.push({ settledTo: job.from, source: [], rows: [], error: (err as Error)?.stack ?? String(err) });
    }
  }
  const buffer = new Uint8Array(packed.reduce((n, d) => n + d.length, 0));
  let at = 0;
  for (const d of packed) {
    buffer.set(d, at);
    at += d.length;
  }
  const message: RecompactReply = { type: 'recompacted', id: req.id, buffer: buffer.buffer, results };
  port!.postMessage(message, [buffer.buffer]);
}

port.on('message', (req: WorkerRequest) => {
  if (req.type === 'pack') pack(req);
  else if (req.type === 'checkpoint') checkpoint(req);
  else if (req.type === 'recompact') recompact(req);
});

const hello: HelloMessage = { type: 'hello', protocol: PACKER_PROTOCOL };
port.postMessage(hello);
