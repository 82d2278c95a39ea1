import type { Logger } from '../common/log';
import type { CompressionWorkers } from './CompressionWorkers';
import { pickCompactionRun, readChunks } from './outputChunks';
import type { InlinePacker, RecompactResult } from './packer';
import type { RecompactJob } from './packerProtocol';
import type { Compaction, SessionOutput } from './SessionOutput';
import type { Statements } from './statements';

/** A tail of this many rows is compacted even if small: a spinner session would otherwise leave a sliver per tick. */
const MAX_TAIL_ROWS = 64;
/** Bytes of pieces compaction is asked for per flush round: spreads a burst of full tails over several rounds (and the worker's time). */
const COMPACTION_BYTES_PER_ROUND = 4 * 1024 * 1024;

export interface CompactorOptions {
  /** The database file, which the background worker reads on its own connection. */
  file: string;
  /** Reads the pieces back when no worker runs. */
  stmts: Statements;
  /** Compresses the segments when no worker runs. */
  inline: InlinePacker;
  workers: Pick<CompressionWorkers, 'started' | 'retire'>;
  /** The store's sessions' output, shared: a session whose object was replaced (deleted, restarted) drops its compaction. */
  outputs: ReadonlyMap<string, SessionOutput>;
  segmentBytes: number;
  quietMs: number;
  /** A compaction came back: the next commit swaps it in. */
  onCompacted: () => void;
  log?: Logger;
}

/**
 * Rewrites the pieces a flush leaves (rows compressed fast) as larger,
 * better compressed segments: the background worker reads a session's
 * pieces back on its own connection and recompresses them, and the session's
 * `compaction` holds the result until a commit swaps it in.
 */
export class Compactor {
  /** Compaction requests at the background worker. */
  private readonly compacting = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly options: CompactorOptions) {}

  /**
   * Starts compacting the sessions whose pieces add up to a segment, are
   * many, or have been quiet a while: the background worker reads them back
   * and recompresses them, and the first commit after they come back swaps
   * the segments in.
   */
  plan(now: number): void {
    let budget = COMPACTION_BYTES_PER_ROUND;
    const planned: Array<{ id: string; output: SessionOutput; compaction: Compaction; job: RecompactJob }> = [];
    for (const [id, output] of this.options.outputs) {
      if (budget <= 0) break;
      if (!this.due(output, now)) continue;
      const compaction: Compaction = { start: output.uncompactedStart, end: output.storedEnd, tailRows: output.tailRows, rows: null, source: [] };
      output.compaction = compaction;
      const job = { session: id, from: compaction.start, to: compaction.end, maxBytes: COMPACTION_BYTES_PER_ROUND, segmentBytes: this.options.segmentBytes };
      planned.push({ id, output, compaction, job });
      budget -= Math.min(job.maxBytes, job.to - job.from);
    }
    if (planned.length === 0) return;
    // One request for all (a postMessage each cost up to a few ms under load); without a worker, read here and compress on libuv's pool.
    const workers = this.options.workers.started();
    const jobs = planned.map((p) => p.job);
    const results = workers ? workers.background.recompact(this.options.file, jobs) : Promise.all(jobs.map((job) => this.recompactInline(job)));
    const work = results.then(
      (all) => {
        all.forEach((result, i) => this.compacted(planned[i], result));
        this.options.onCompacted();
      },
      (err: unknown) => {
        if (this.closed) return;
        for (const { output, compaction } of planned) if (output.compaction === compaction) output.compaction = null;
        if (workers?.background.isBroken) {
          this.options.workers.retire(workers, err);
          return;
        }
        this.options.log?.warn({ err }, 'compacting stored output failed; leaving it as it is');
        for (const { output } of planned) output.settleUncompacted();
      },
    );
    this.compacting.add(work);
    void work.finally(() => this.compacting.delete(work));
  }

  /** The session's pieces add up to a segment, are many, or have been quiet a while (and none is under way). */
  due(output: SessionOutput, now: number): boolean {
    if (output.compaction || output.dropStored) return false;
    const tail = output.storedEnd - output.uncompactedStart;
    if (tail <= 0) return false;
    const full = tail >= this.options.segmentBytes || output.tailRows >= MAX_TAIL_ROWS;
    const quiet = output.end === output.storedEnd && now - output.lastAppendAt >= this.options.quietMs;
    return full || quiet;
  }

  /**
   * Resolves once the compactions under way have come back and `flush` has
   * swapped them in, with those that the flushes start in turn.
   */
  async settled(flush: () => Promise<boolean>): Promise<void> {
    for (let round = 0; round < 1000 && !this.closed; round++) {
      await Promise.all(this.compacting);
      await flush();
      const now = Date.now();
      const pending = [...this.options.outputs.values()].some((o) => o.compaction || this.due(o, now));
      if (this.compacting.size === 0 && !pending) return;
    }
  }

  /** Results that come back from now on are dropped (the store is closing). */
  dispose(): void {
    this.closed = true;
  }

  /** Files a compaction that came back: swapped in by the next commit, unless the session moved on meanwhile. */
  private compacted(planned: { id: string; output: SessionOutput; compaction: Compaction }, result: RecompactResult): void {
    const { id, output, compaction } = planned;
    if (this.closed || this.options.outputs.get(id) !== output || output.compaction !== compaction) return;
    if (!result.error && result.settledTo > compaction.start && output.uncompactedStart === compaction.start) {
      // Raw rows at the front (and short runs between them) are final as they are: the run starts after them.
      output.uncompactedStart = compaction.start = result.settledTo;
      if (result.source.length === 0) {
        // Nothing else yet: what follows them waits for the next compaction.
        output.compaction = null;
        output.tailRows = 0;
        return;
      }
    }
    if (result.error || result.source.length === 0) {
      // It could not read or pack those rows: leave them be.
      if (result.error) this.options.log?.warn({ sessionId: id, err: result.error }, 'compacting stored output failed; leaving it as it is');
      output.compaction = null;
      output.settleUncompacted();
      return;
    }
    compaction.end = result.source[result.source.length - 1][1];
    compaction.source = result.source;
    compaction.rows = result.rows;
  }

  /** What the background worker's recompact does, without a worker: reads here, compresses on libuv's pool. */
  private async recompactInline(range: RecompactJob): Promise<RecompactResult> {
    const id = range.session;
    // This reads (and decompresses) on the event loop: a little at a time.
    const maxBytes = Math.min(range.maxBytes, 2 * range.segmentBytes);
    const { settledTo, source } = pickCompactionRun(this.options.stmts.rowsIn.iterate(id, range.from, range.to), range.from, maxBytes);
    if (source.length === 0) return { settledTo, source, rows: [] };
    const end = source[source.length - 1][1];
    const raw = Buffer.concat(readChunks(this.options.stmts, id, settledTo, end));
    const count = Math.max(1, Math.floor(raw.length / range.segmentBytes));
    const packed = await this.options.inline.segments(raw, count);
    return {
      settledTo,
      source,
      rows: packed.map((p, i) => ({ start: settledTo + Math.floor((raw.length * i) / count), end: settledTo + Math.floor((raw.length * (i + 1)) / count), kind: p.kind, data: p.data })),
    };
  }
}
