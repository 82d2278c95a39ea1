import { brotliCompress, brotliCompressSync, brotliDecompressSync, constants, deflateRawSync, gunzipSync, gzipSync, type BrotliOptions } from 'node:zlib';

/**
 * How output rows and snapshots are compressed. Shared by the main thread
 * (reads, synchronous flushes, the fallback packer) and the compression
 * worker, so it imports nothing but node:zlib.
 *
 * Output rows carry their encoding in `output.compressed`. Every row decodes
 * on its own; the kinds differ only in what the writer may still do with them:
 *
 * - PIECE rows are what a flush writes: a tick's bytes, compressed fast so the
 *   commit is small. They are the session's uncompacted tail.
 * - SEGMENT rows replace a run of pieces once it reaches `segmentBytes` (or
 *   the session goes quiet): recompressed in one go with a large window, which
 *   is where the ratio comes from (research in bench/persist.ts).
 * - RAW rows hold bytes that did not shrink; GZIP rows were written by
 *   agentd before schema 2 and are still read.
 */
export const OutputKind = {
  RAW: 0,
  /** gzip, whole row: written by schema 1; read, never written now. */
  GZIP: 1,
  /** brotli, whole row, fast quality: a flush's bytes, not yet compacted. */
  PIECE: 2,
  /** brotli, whole row, high quality: compacted pieces. */
  SEGMENT: 3,
} as const;
export type OutputKind = (typeof OutputKind)[keyof typeof OutputKind];

export interface CodecSettings {
  /** brotli quality of pieces. 1: ~3.5 ms/MB, 5.4x on 16 KiB of agent output. */
  pieceQuality: number;
  /** brotli quality of segments. 6: ~9 ms/MB, 9.4x on 256 KiB of agent output. */
  segmentQuality: number;
  /** gzip level of screen snapshots (kept gzip so older snapshots read the same way). */
  snapshotLevel: number;
}

export const DEFAULT_CODEC: CodecSettings = { pieceQuality: 1, segmentQuality: 6, snapshotLevel: 6 };

export type PackKind = typeof OutputKind.PIECE | typeof OutputKind.SEGMENT;

function brotliOptions(length: number, kind: PackKind, settings: CodecSettings): BrotliOptions {
  return {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: kind === OutputKind.PIECE ? settings.pieceQuality : settings.segmentQuality,
      // A window just large enough for the row: less memory and setup for small rows.
      [constants.BROTLI_PARAM_LGWIN]: Math.max(16, Math.min(24, Math.ceil(Math.log2(Math.max(length, 1))))),
      [constants.BROTLI_PARAM_SIZE_HINT]: length,
    },
  };
}

/** `packed` if it is smaller than `raw`, else a copy of `raw` as a RAW row (random bytes do not shrink). */
function smaller(raw: Uint8Array, packed: Buffer, kind: PackKind): { kind: OutputKind; data: Buffer } {
  if (packed.length < raw.length) return { kind, data: packed };
  return { kind: OutputKind.RAW, data: Buffer.from(raw) };
}

/** Rows smaller than this are always tried: probing would cost as much as packing. */
const PROBE_MIN_BYTES = 16 * 1024;
const PROBE_BYTES = 4 * 1024;
/** A row is packed only if a sample of it shrinks at least this much. */
const PROBE_MIN_RATIO = 1.5;
/** A small deflate state (4 KiB window): the sample is 4 KiB, and setting up the default one cost more than deflating. */
const PROBE_OPTIONS = { level: 1, windowBits: 12, memLevel: 4 } as const;

/**
 * Whether packing `raw` is worth its CPU: a 4 KiB sample from its middle is
 * deflated at level 1 (10–30 µs, once per row of up to 256 KiB). Output that
 * hardly shrinks — `cat` of a binary or base64 file — is stored raw: brotli
 * on it cost ~27 ms of CPU per MB for a 1.3x gain, CPU that a 2-core machine
 * takes from the stream itself (bench/core.ts throughput). Agent output
 * shrinks 3x or more at this level and is packed. (Byte entropy would be
 * cheaper but cannot tell agent output, ~5.4 bits a byte, from base64's 6.)
 */
export function worthPacking(raw: Uint8Array): boolean {
  if (raw.length < PROBE_MIN_BYTES) return true;
  const at = Math.floor((raw.length - PROBE_BYTES) / 2);
  const sample = raw.subarray(at, at + PROBE_BYTES);
  return deflateRawSync(sample, PROBE_OPTIONS).length * PROBE_MIN_RATIO <= sample.length;
}

/**
 * A row stored raw is final — compaction skips it — if it is large enough to
 * have been judged on its own: a small one may just have been too short to
 * shrink (a spinner's sliver) and joins its neighbours in a segment.
 */
export function isFinalRaw(kind: number, length: number): boolean {
  return kind === OutputKind.RAW && length >= PROBE_MIN_BYTES;
}

function rawRow(raw: Uint8Array): { kind: OutputKind; data: Buffer } {
  return { kind: OutputKind.RAW, data: Buffer.from(raw) };
}

/** Compresses `raw` as one row, on this thread. */
export function packOutput(raw: Uint8Array, kind: PackKind, settings: CodecSettings): { kind: OutputKind; data: Buffer } {
  if (!worthPacking(raw)) return rawRow(raw);
  return smaller(raw, brotliCompressSync(raw, brotliOptions(raw.length, kind, settings)), kind);
}

/** Compresses `raw` as one row on libuv's thread pool (the fallback when there is no worker). */
export function packOutputAsync(raw: Uint8Array, kind: PackKind, settings: CodecSettings): Promise<{ kind: OutputKind; data: Buffer }> {
  if (!worthPacking(raw)) return Promise.resolve(rawRow(raw));
  return new Promise((resolve, reject) => {
    brotliCompress(raw, brotliOptions(raw.length, kind, settings), (err, packed) => (err ? reject(err) : resolve(smaller(raw, packed, kind))));
  });
}

/** The bytes of one output row. */
export function unpackOutput(kind: number, data: Buffer): Buffer {
  switch (kind) {
    case OutputKind.RAW:
      return data;
    case OutputKind.GZIP:
      return gunzipSync(data);
    case OutputKind.PIECE:
    case OutputKind.SEGMENT:
      return brotliDecompressSync(data);
    default:
      throw new Error(`output row of unknown kind ${kind} (written by a newer agentd?)`);
  }
}

export function packSnapshot(raw: Uint8Array, settings: CodecSettings): Buffer {
  return gzipSync(raw, { level: settings.snapshotLevel });
}

export function unpackSnapshot(data: Buffer): string {
  return gunzipSync(data).toString('utf8');
}
