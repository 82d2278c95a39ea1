/**
 * One session's output as the SQLite store holds it: a contiguous run of
 * chunks on disk followed by the bytes queued for the next flush. Together
 * they always form one contiguous range [start, end) of the output stream.
 */
export class SessionOutput {
  /** The stored chunks are obsolete (a gap in the stream came): the next flush deletes them. */
  dropStored = false;
  /** Queued bytes, oldest first, starting at `queueStart`. */
  pieces: Buffer[] = [];
  queuedBytes = 0;
  /** Offset of the first queued byte: the stored end, unless a gap moved it. */
  queueStart: number;

  constructor(
    /** First offset stored on disk; equal to `storedEnd` when nothing is. */
    public storedStart: number,
    public storedEnd: number,
    /** Start of the newest stored chunk, to merge small chunks; null when nothing is stored. */
    public lastChunkStart: number | null,
  ) {
    this.queueStart = storedEnd;
  }

  static empty(): SessionOutput {
    return new SessionOutput(0, 0, null);
  }

  get hasStored(): boolean {
    return !this.dropStored && this.storedEnd > this.storedStart;
  }

  get start(): number {
    return this.hasStored ? this.storedStart : this.queueStart;
  }

  get end(): number {
    return this.queueStart + this.queuedBytes;
  }

  /**
   * Queues `data` found at `offset`. Bytes already held are skipped (a
   * replay after a revive); a gap means the bytes before it can never be
   * read contiguously again, so the history restarts at `offset`. Returns the
   * number of bytes queued and whether a gap was found.
   */
  append(offset: number, data: Buffer, maxHistoryBytes: number): { queued: number; gap: boolean } {
    const end = this.end;
    let gap = false;
    if (offset > end) {
      gap = this.hasStored || this.queuedBytes > 0;
      this.restartAt(offset);
    } else if (offset < end) {
      if (offset + data.length <= end) return { queued: 0, gap };
      data = data.subarray(end - offset);
    }
    // A copy: the caller may reuse its buffer (a ring, a pooled read) once we return.
    this.pieces.push(Buffer.from(data));
    this.queuedBytes += data.length;
    if (this.queuedBytes > maxHistoryBytes) this.dropQueuedBefore(this.end - maxHistoryBytes);
    return { queued: data.length, gap };
  }

  /** The queued bytes within [from, to), in order. */
  queuedSlices(from: number, to: number): Buffer[] {
    const out: Buffer[] = [];
    let at = this.queueStart;
    for (const piece of this.pieces) {
      const pieceEnd = at + piece.length;
      if (pieceEnd > from && at < to) out.push(piece.subarray(Math.max(from, at) - at, Math.min(to, pieceEnd) - at));
      at = pieceEnd;
      if (at >= to) break;
    }
    return out;
  }

  /** Records what a committed flush left on disk; the queue is then empty. */
  committed(stored: { start: number; end: number; lastChunkStart: number | null }): void {
    this.storedStart = stored.start;
    this.storedEnd = stored.end;
    this.lastChunkStart = stored.lastChunkStart;
    this.dropStored = false;
    this.pieces = [];
    this.queuedBytes = 0;
    this.queueStart = stored.end;
  }

  private restartAt(offset: number): void {
    this.dropStored = this.dropStored || this.storedEnd > this.storedStart;
    this.pieces = [];
    this.queuedBytes = 0;
    this.queueStart = offset;
  }

  /** Forgets whole queued pieces that lie before `offset` (the history cap, while the disk lags). */
  private dropQueuedBefore(offset: number): void {
    while (this.pieces.length > 1 && this.queueStart + this.pieces[0].length <= offset) {
      const piece = this.pieces.shift() as Buffer;
      this.queueStart += piece.length;
      this.queuedBytes -= piece.length;
    }
    // What is stored is now older still, and no longer contiguous with the queue.
    if (this.queueStart > this.storedEnd) this.dropStored = this.dropStored || this.storedEnd > this.storedStart;
  }
}
