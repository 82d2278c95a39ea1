import { isFinalRaw, type OutputKind } from './codec';

/** One output row: bytes [start, end) of the stream, encoded as `kind`. */
export interface Row {
  start: number;
  end: number;
  kind: OutputKind;
  data: Buffer;
}

/**
 * Uncompacted rows [start, end) being recompressed as segments by the
 * background worker, which reads them back from disk; `rows` once they are
 * back. `source` lists the rows it read: they must still be the rows there
 * when the segments are swapped in.
 */
export interface Compaction {
  start: number;
  end: number;
  /** Uncompacted rows it replaces (approximate: only a heuristic uses it). */
  tailRows: number;
  rows: Row[] | null;
  source: Array<[number, number, number]>;
}

/**
 * Contiguous bytes of a stream from `start`, as the buffers they were
 * appended in (kept, not copied: a PTY's chunks are fresh buffers that nobody
 * changes). Dropping from the front slices at most one of them.
 */
export class ByteLog {
  private pieces: Buffer[] = [];
  private bytes = 0;

  constructor(public start: number) {}

  get end(): number {
    return this.start + this.bytes;
  }

  /** Keeps `data` (a reference: the caller must not change it afterwards). */
  append(data: Buffer): void {
    this.pieces.push(data);
    this.bytes += data.length;
  }

  /** The bytes within [from, to), in order, as views of the appended buffers. */
  slices(from: number, to: number): Buffer[] {
    const out: Buffer[] = [];
    let at = this.start;
    for (const piece of this.pieces) {
      const pieceEnd = at + piece.length;
      if (pieceEnd > from && at < to) out.push(piece.subarray(Math.max(from, at) - at, Math.min(to, pieceEnd) - at));
      at = pieceEnd;
      if (at >= to) break;
    }
    return out;
  }

  /** Forgets the bytes before `offset` (at most `end`). */
  dropBefore(offset: number): void {
    offset = Math.min(offset, this.end);
    while (this.pieces.length > 0 && this.start + this.pieces[0].length <= offset) {
      const piece = this.pieces.shift() as Buffer;
      this.start += piece.length;
      this.bytes -= piece.length;
    }
    if (offset > this.start) {
      this.pieces[0] = this.pieces[0].subarray(offset - this.start);
      this.bytes -= offset - this.start;
      this.start = offset;
    }
  }

  /** Forgets everything and continues at `offset`. */
  reset(offset: number): void {
    this.pieces = [];
    this.bytes = 0;
    this.start = offset;
  }

  /** The last piece boundary at or before `offset` (`start` if none is). */
  boundaryAtOrBefore(offset: number): number {
    let at = this.start;
    for (const piece of this.pieces) {
      if (at + piece.length > offset) break;
      at += piece.length;
    }
    return at;
  }
}

/**
 * One session's output as the SQLite store holds it. Together the rows on
 * disk and the bytes in memory always form one contiguous range
 * [start, end) of the output stream:
 *
 *   storedStart ─────── rows on disk ─────── storedEnd
 *            uncompactedStart ──────────────────┴──── packedEnd ── sentEnd ── end
 *            │ pieces, to be compacted          │ packed rows  │ at the    │ queued
 *                                               │ to commit    │ packer    │
 *
 * `log` holds the bytes from `storedEnd` to `end`, so readers see bytes that
 * are not on disk yet. Rows before `uncompactedStart` are final (segments,
 * gzip rows of schema 1, bytes that do not shrink); the pieces after it are
 * read back and recompressed by the background worker.
 */
export class SessionOutput {
  /** The rows on disk are obsolete (a gap in the stream came): the next commit deletes them. */
  dropStored = false;
  /** Bumped when the stream restarts: packed results computed before it are dropped. */
  epoch = 0;
  readonly log: ByteLog;
  /** Compressed rows [storedEnd, packedEnd) waiting for a commit. */
  packed: Row[] = [];
  packedEnd: number;
  /** Bytes up to here were handed to the packer (or packed). */
  sentEnd: number;
  /** Start of the rows not compacted yet (`storedEnd` when there are none). */
  uncompactedStart: number;
  /** Rows written since the last compaction (approximate after a restart). */
  tailRows = 0;
  compaction: Compaction | null = null;
  /** `Date.now()` of the last append: a session quiet for a while gets its pieces compacted. */
  lastAppendAt = 0;

  constructor(
    /** First offset on disk; equal to `storedEnd` when nothing is. */
    public storedStart: number,
    public storedEnd: number,
    /** Where the rows not compacted yet start (`storedEnd`: there are none). */
    uncompactedStart = storedEnd,
  ) {
    this.log = new ByteLog(storedEnd);
    this.packedEnd = storedEnd;
    this.sentEnd = storedEnd;
    this.uncompactedStart = Math.max(storedStart, Math.min(uncompactedStart, storedEnd));
  }

  static empty(): SessionOutput {
    return new SessionOutput(0, 0);
  }

  get hasStored(): boolean {
    return this.storedEnd > this.storedStart;
  }

  get start(): number {
    return this.storedStart;
  }

  get end(): number {
    return this.log.end;
  }

  /** Bytes not on disk yet. */
  get pendingBytes(): number {
    return this.end - this.storedEnd;
  }

  /**
   * Queues `data` found at `offset`. Bytes already held are skipped (a
   * replay after a revive); a gap means the bytes before it can never be
   * read contiguously again, so the history restarts at `offset`. While the
   * disk lags, bytes not yet on disk are capped at `maxHistoryBytes` the same
   * way. Returns the number of bytes queued and whether a gap was found.
   */
  append(offset: number, data: Buffer, maxHistoryBytes: number, now: number): { queued: number; gap: boolean } {
    const end = this.end;
    let gap = false;
    if (offset > end) {
      gap = end > this.start;
      this.restartAt(offset);
    } else if (offset < end) {
      if (offset + data.length <= end) return { queued: 0, gap };
      data = data.subarray(end - offset);
    }
    this.log.append(data);
    this.lastAppendAt = now;
    if (this.pendingBytes > maxHistoryBytes) {
      // The disk cannot keep up: keep the newest bytes, whole appends, at least the cap; what is on disk no longer joins them.
      const from = this.log.boundaryAtOrBefore(this.end - maxHistoryBytes);
      if (from > this.storedEnd) this.restartAt(from);
    }
    return { queued: data.length, gap };
  }

  /** The bytes [from, to) held in memory (from must be at least `storedEnd`). */
  memorySlices(from: number, to: number): Buffer[] {
    return this.log.slices(from, to);
  }

  /** Takes the bytes not yet handed to the packer, in rows of at most `rowBytes` (with `wholeRows`, only full rows: the rest stays). */
  takeUnsent(rowBytes: number, wholeRows = false): Array<{ start: number; end: number; parts: Buffer[] }> {
    const out: Array<{ start: number; end: number; parts: Buffer[] }> = [];
    const end = wholeRows ? this.sentEnd + Math.floor((this.end - this.sentEnd) / rowBytes) * rowBytes : this.end;
    for (let at = this.sentEnd; at < end; at += rowBytes) {
      const stop = Math.min(end, at + rowBytes);
      out.push({ start: at, end: stop, parts: this.log.slices(at, stop) });
    }
    this.sentEnd = end;
    return out;
  }

  /** Adds a packed row if it continues what is packed (else it is stale: dropped). */
  addPacked(row: Row, epoch: number): boolean {
    if (epoch !== this.epoch || row.start !== this.packedEnd) return false;
    this.packed.push(row);
    this.packedEnd = row.end;
    if (this.sentEnd < this.packedEnd) this.sentEnd = this.packedEnd;
    return true;
  }

  /** The packer failed: what it had is sent again. */
  unsend(): void {
    this.sentEnd = this.packedEnd;
  }

  /**
   * Records what a committed flush left on disk: rows up to `end`, the oldest
   * from `start` (the history cap may have dropped some), `pieces` new
   * uncompacted rows, and whether the compaction was applied (or found stale).
   */
  committed(start: number, end: number, pieces: number, compaction: 'applied' | 'stale' | 'none'): void {
    // Rows stored raw (they did not shrink) are final: compaction would only read them back to find that again.
    if (this.uncompactedStart === this.storedEnd) {
      for (const row of this.packed) {
        if (!isFinalRaw(row.kind, row.end - row.start) || row.start !== this.uncompactedStart) break;
        this.uncompactedStart = row.end;
        pieces--;
      }
    }
    this.storedStart = start;
    this.storedEnd = end;
    this.dropStored = false;
    this.packed = [];
    this.log.dropBefore(end);
    this.tailRows += pieces;
    const c = this.compaction;
    if (c && compaction !== 'none') {
      this.compaction = null;
      if (compaction === 'applied') {
        this.uncompactedStart = c.end;
        this.tailRows = Math.max(0, this.tailRows - c.tailRows);
      }
    }
    // The history cap dropped uncompacted rows.
    if (start > this.uncompactedStart) this.uncompactedStart = start;
  }

  /** Leaves the uncompacted rows as they are (the worker found nothing it could read there). */
  settleUncompacted(): void {
    this.uncompactedStart = this.storedEnd;
    this.tailRows = 0;
  }

  private restartAt(offset: number): void {
    this.dropStored = this.dropStored || this.hasStored;
    this.epoch++;
    if (offset >= this.log.start && offset <= this.log.end) this.log.dropBefore(offset);
    else this.log.reset(offset);
    this.storedStart = this.storedEnd = this.packedEnd = this.sentEnd = this.uncompactedStart = offset;
    this.packed = [];
    this.tailRows = 0;
    this.compaction = null;
  }
}
