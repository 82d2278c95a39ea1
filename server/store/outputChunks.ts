import { gunzipSync, gzipSync } from 'node:zlib';
import type { SessionOutput } from './SessionOutput';
import type { Statements } from './statements';

export interface ChunkSettings {
  /** Largest chunk row, in raw bytes. */
  chunkBytes: number;
  /** Chunks at least this large are compressed; a smaller newest chunk stays raw and grows. */
  sealBytes: number;
  compressionLevel: number;
  maxHistoryBytes: number;
}

/** What a session has on disk after a flush. */
export interface StoredRange {
  start: number;
  end: number;
  lastChunkStart: number | null;
}

/**
 * Writes a session's queued output as chunk rows of at most `chunkBytes`,
 * inside the caller's transaction, then applies the history cap by dropping
 * whole chunks that end before `end - maxHistoryBytes`. A newest chunk under
 * `sealBytes` is read back and rewritten with the next bytes, so a quiet
 * session neither leaves slivers nor pays for gzip on every tick: a chunk is
 * compressed once, when it reaches `sealBytes`.
 */
export function writeChunks(stmts: Statements, id: string, output: SessionOutput, settings: ChunkSettings): StoredRange {
  if (output.dropStored) stmts.deleteOutput.run(id);
  let data = Buffer.concat(output.pieces);
  let at = output.queueStart;
  let start = output.hasStored ? output.storedStart : output.queueStart;
  let lastChunkStart = output.hasStored ? output.lastChunkStart : null;
  if (lastChunkStart !== null && output.storedEnd - lastChunkStart < settings.sealBytes) {
    const tail = stmts.chunkAt.get(id, output.storedEnd);
    if (tail) {
      data = Buffer.concat([tail.compressed ? gunzipSync(tail.data) : tail.data, data]);
      at = tail.start;
      stmts.deleteChunkAt.run(id, tail.end);
    }
  }
  for (let i = 0; i < data.length; i += settings.chunkBytes) {
    const raw = data.subarray(i, i + settings.chunkBytes);
    const packed = raw.length >= settings.sealBytes ? gzipSync(raw, { level: settings.compressionLevel }) : null;
    const compressed = packed !== null && packed.length < raw.length; // random bytes do not shrink: keep them as they are
    stmts.insertChunk.run(id, at + i, at + i + raw.length, compressed ? 1 : 0, compressed ? packed : raw);
    lastChunkStart = at + i;
  }
  const end = at + data.length;
  if (data.length === 0) return { start: end, end, lastChunkStart: null }; // only a drop of stale rows
  const keepFrom = end - settings.maxHistoryBytes;
  if (keepFrom > start && stmts.dropChunksBefore.run(id, keepFrom).changes > 0) {
    start = (stmts.firstChunk.get(id) as { start: number }).start;
  }
  stmts.raiseOutputBytes.run(end, id);
  return { start, end, lastChunkStart };
}

/** The stored bytes [from, stop) of a session, decompressed, in order; throws if the chunks do not cover them. */
export function readChunks(stmts: Statements, id: string, from: number, stop: number): Buffer[] {
  const parts: Buffer[] = [];
  let next = from;
  for (const row of stmts.readOutput.iterate(id, from, stop)) {
    if (row.start > next) throw new Error(`output of session ${id} has a hole at ${next}..${row.start}`);
    const bytes = row.compressed ? gunzipSync(row.data) : row.data;
    parts.push(bytes.subarray(next - row.start, Math.min(stop, row.end) - row.start));
    next = Math.min(stop, row.end);
  }
  if (next < stop) throw new Error(`output of session ${id} ends early at ${next}, before ${stop}`);
  return parts;
}
