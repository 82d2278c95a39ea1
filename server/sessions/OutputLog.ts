/**
 * The session's output stream: every byte gets an offset (its position since
 * the session started, across revivals). Keeps the newest bytes in memory, up
 * to a cap, for resume-by-offset and snapshots; older bytes live in the store.
 * Appending is O(1) and copies nothing: the chunk node-pty gave us is kept.
 * (Copying into 64 KiB blocks cost ~2 ms of CPU per MB of a flood in GC and
 * did not lower the memory a burst leaves behind: see common/memory.ts.)
 */
export class OutputLog {
  private chunks: Buffer[] = [];
  private head = 0; // index of the oldest kept chunk (we shift lazily)
  private startOffset: number;
  private endOffset: number;
  private keptBytes = 0;

  constructor(private readonly capBytes: number, initialOffset = 0) {
    this.startOffset = initialOffset;
    this.endOffset = initialOffset;
  }

  /** Offset of the next byte to be written: the stream's end. */
  get end(): number {
    return this.endOffset;
  }

  /** Offset of the oldest byte still in memory. */
  get start(): number {
    return this.startOffset;
  }

  /** Appends a chunk; returns the offset of its first byte. */
  append(chunk: Buffer): number {
    const at = this.endOffset;
    this.chunks.push(chunk);
    this.keptBytes += chunk.length;
    this.endOffset += chunk.length;
    while (this.keptBytes - this.chunks[this.head].length >= this.capBytes && this.head < this.chunks.length - 1) {
      const dropped = this.chunks[this.head];
      this.head++;
      this.keptBytes -= dropped.length;
      this.startOffset += dropped.length;
    }
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return at;
  }

  /** True if every byte from `offset` to the end is in memory. */
  has(offset: number): boolean {
    return offset >= this.startOffset && offset <= this.endOffset;
  }

  /**
   * The bytes from `offset` to `to` (default: the end), or null if some of
   * them are no longer in memory.
   */
  slice(offset: number, to: number = this.endOffset): Buffer | null {
    const parts = this.parts(offset, to);
    if (!parts) return null;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** Like `slice`, but always into a new buffer of its own (one that can be transferred to a worker). */
  copy(offset: number, to: number = this.endOffset): Buffer | null {
    const parts = this.parts(offset, to);
    if (!parts) return null;
    const out = Buffer.allocUnsafeSlow(to - offset);
    let at = 0;
    for (const part of parts) at += part.copy(out, at);
    return out;
  }

  /** Views of the kept chunks covering [offset, to); null if some of those bytes are no longer in memory. */
  private parts(offset: number, to: number): Buffer[] | null {
    if (!this.has(offset) || to < offset || to > this.endOffset) return null;
    const parts: Buffer[] = [];
    let pos = this.startOffset;
    for (let i = this.head; i < this.chunks.length && pos < to; i++) {
      const chunk = this.chunks[i];
      const chunkEnd = pos + chunk.length;
      if (chunkEnd > offset) {
        const from = Math.max(0, offset - pos);
        const until = Math.min(chunk.length, to - pos);
        parts.push(from === 0 && until === chunk.length ? chunk : chunk.subarray(from, until));
      }
      pos = chunkEnd;
    }
    return parts;
  }

  /** Drops everything in memory (the stream's end is kept): for idle sessions whose bytes are stored. */
  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.keptBytes = 0;
    this.startOffset = this.endOffset;
  }

  get bytesInMemory(): number {
    return this.keptBytes;
  }
}
