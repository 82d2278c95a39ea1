/**
 * Messages between the store and its compression workers. Bytes to pack lie
 * one after another in a buffer that is transferred, not copied, and so do
 * the packed bytes of the reply. Compaction sends no bytes: the worker reads
 * the rows on its own connection to the database.
 */

/** Bumped on any change here: a stale dist/ worker is then refused and the store packs on its own thread. */
export const PACKER_PROTOCOL = 6;

export type PackWhat = 'piece' | 'snapshot';

export interface PackRequest {
  type: 'pack';
  id: number;
  /** The items' bytes from offset 0; may be longer than they are (a reused buffer). */
  buffer: ArrayBuffer;
  items: Array<{ what: PackWhat; length: number }>;
}

/** A PASSIVE checkpoint of the database, on the worker's own connection. */
export interface CheckpointRequest {
  type: 'checkpoint';
  id: number;
  file: string;
}

/**
 * Recompresses runs of sessions' rows, read on the worker's own connection,
 * each into segments of `segmentBytes` to `2 * segmentBytes`: whole rows from
 * `from`, stopping at `to` or once `maxBytes` are read.
 */
export interface RecompactRequest {
  type: 'recompact';
  id: number;
  file: string;
  jobs: RecompactJob[];
}

export interface RecompactJob {
  session: string;
  from: number;
  to: number;
  maxBytes: number;
  segmentBytes: number;
}

export type WorkerRequest = PackRequest | CheckpointRequest | RecompactRequest;

export interface PackReply {
  type: 'packed';
  id: number;
  buffer: ArrayBuffer;
  /** Per item: its output kind (snapshots: 1, gzip) and packed length. */
  results: Array<{ kind: number; length: number }>;
  /** The request's buffer, handed back for the next request: fresh memory costs page faults on the event loop. */
  input?: ArrayBuffer;
  error?: string;
}

export interface CheckpointReply {
  type: 'checkpointed';
  id: number;
  /** Frames in the WAL and frames moved into the database, as SQLite reports them. */
  log?: number;
  checkpointed?: number;
  error?: string;
}

export interface RecompactReply {
  type: 'recompacted';
  id: number;
  /** The packed bytes of every job's rows, one after another. */
  buffer: ArrayBuffer;
  results: Array<{
    /** Rows from the job's `from` to here are raw and final: skipped, and the run starts here. */
    settledTo: number;
    /** The rows read, [start, end) and kind: the store swaps the segments in only if these are still the rows there. */
    source: Array<[number, number, number]>;
    /** The new rows. */
    rows: Array<{ start: number; end: number; kind: number; length: number }>;
    error?: string;
  }>;
  error?: string;
}

export interface HelloMessage {
  type: 'hello';
  protocol: number;
}

export type WorkerReply = PackReply | CheckpointReply | RecompactReply | HelloMessage;
