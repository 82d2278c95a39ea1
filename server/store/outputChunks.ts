import { isFinalRaw, OutputKind, unpackOutput } from './codec';
import type { SessionOutput } from './SessionOutput';
import type { Statements } from './statements';

/** What a session has on disk after a commit, and what became of its compaction. */
export interface StoredRange {
  start: number;
  end: number;
  /** New pieces written (uncompacted rows). */
  pieces: number;
  compaction: 'applied' | 'stale' | 'none';
}

/**
 * Writes, inside the caller's transaction, what a session has ready: its
 * packed rows, then (if `swapIn`) its compacted segments in place of the
 * pieces they were made from, if those are still there, then applies the
 * history cap by dropping whole rows that end before `end - maxHistoryBytes`.
 * Rows already hold their final bytes: nothing is compressed here.
 */
export function writeOutput(stmts: Statements, id: string, output: SessionOutput, maxHistoryBytes: number, swapIn: boolean): StoredRange {
  if (output.dropStored) stmts.deleteOutput.run(id);
  for (const row of output.packed) stmts.insertChunk.run(id, row.start, row.end, row.kind, row.data);
  let start = output.storedStart; // packed rows continue at storedEnd, which is storedStart when nothing is stored
  const end = output.packed.length > 0 ? output.packedEnd : output.storedEnd;

  let compaction: StoredRange['compaction'] = 'none';
  const c = output.compaction;
  if (c?.rows && swapIn) {
    // Stale if what it covers moved since (history cap, restart) or, read back from disk, its rows changed.
    const fresh = c.start === output.uncompactedStart && c.end <= output.storedEnd && sameRows(stmts.rowsIn.all(id, c.start, c.end), c.source);
    compaction = fresh && !output.dropStored ? 'applied' : 'stale';
    // Bytes that did not shrink stay in the rows they are in.
    if (compaction === 'applied' && c.rows.some((r) => r.kind !== OutputKind.RAW)) {
      stmts.deleteChunksIn.run(id, c.start, c.end);
      for (const row of c.rows) stmts.insertChunk.run(id, row.start, row.end, row.kind, row.data);
    }
  }

  if (end > start && end - maxHistoryBytes > start && stmts.dropChunksBefore.run(id, end - maxHistoryBytes).changes > 0) {
    start = (stmts.firstChunk.get(id) as { start: number }).start;
  }
  if (output.packed.length > 0) stmts.raiseOutputBytes.run(end, id);
  return { start, end, pieces: output.packed.length, compaction };
}

function sameRows(rows: Array<{ start: number; end: number; compressed: number }>, source: Array<[number, number, number]>): boolean {
  return rows.length === source.length && rows.every((r, i) => r.start === source[i][0] && r.end === source[i][1] && r.compressed === source[i][2]);
}

/** The stored bytes [from, stop) of a session, decompressed, in order; throws if the rows do not cover them. */
export function readChunks(stmts: Statements, id: string, from: number, stop: number): Buffer[] {
  const parts: Buffer[] = [];
  let next = from;
  for (const row of stmts.readOutput.iterate(id, from, stop)) {
    if (row.start > next) throw new Error(`output of session ${id} has a hole at ${next}..${row.start}`);
    const bytes = unpackOutput(row.compressed, row.data);
    parts.push(bytes.subarray(next - row.start, Math.min(stop, row.end) - row.start));
    next = Math.min(stop, row.end);
  }
  if (next < stop) throw new Error(`output of session ${id} ends early at ${next}, before ${stop}`);
  return parts;
}

/** The rows a compaction rewrites, chosen from the stored rows after `from`. */
export interface CompactionRun {
  /** Rows from `from` to here are final as they are (stored raw): the run starts here. */
  settledTo: number;
  /** The run: contiguous rows worth recompressing, [start, end) and kind. */
  source: Array<[number, number, number]>;
}

/**
 * A run of compressed rows shorter than this that ends at a raw row is left as
 * it is: in a flood of output that does not shrink, each flush's remainder is
 * a small piece between raw rows, and recompacting those one by one would
 * read the database back over and over for nothing.
 */
const SHORT_RUN_BYTES = 64 * 1024;

/**
 * Picks what to recompact among `rows` (the rows after `from`, in order, no
 * data): rows stored raw at the front are skipped (they did not shrink and
 * never will), and so are short runs between them; then contiguous rows up
 * to the next raw one, a hole, or `maxBytes`. Only the run's data then needs
 * reading. A short run right after skipped raw rows waits (empty `source`):
 * `settledTo` is where the next compaction starts.
 */
export function pickCompactionRun(rows: Iterable<{ start: number; end: number; compressed: number }>, from: number, maxBytes: number): CompactionRun {
  let settledTo = from;
  let source: Array<[number, number, number]> = [];
  for (const row of rows) {
    const next = source.length ? source[source.length - 1][1] : settledTo;
    if (row.start !== next) break;
    if (isFinalRaw(row.compressed, row.end - row.start)) {
      if (next - settledTo >= SHORT_RUN_BYTES) break;
      settledTo = row.end;
      source = [];
      continue;
    }
    source.push([row.start, row.end, row.compressed]);
    if (row.end - settledTo >= maxBytes) break;
  }
  // A short run after raw rows is likely the start of the next one between raw rows (the flood goes on): later.
  const runBytes = source.length ? source[source.length - 1][1] - settledTo : 0;
  if (settledTo > from && runBytes < SHORT_RUN_BYTES) source = [];
  return { settledTo, source };
}
