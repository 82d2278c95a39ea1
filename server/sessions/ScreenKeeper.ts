import { Clock } from '../common/clock';
import { IDisposable } from '../common/disposable';
import { Logger } from '../common/log';
import { SessionStore } from '../store/SessionStore';
import { OutputLog } from './OutputLog';
import { ScreenService, Snapshot } from './ScreenService';

/** A snapshot is stored when output has been quiet this long… */
const SNAPSHOT_QUIET_MS = 2_000;
/** …and at least this often while it flows. */
const SNAPSHOT_EVERY_MS = 5_000;
/**
 * Bytes behind at most, when the model is next read, that are parsed to catch
 * up (exact); more than that — a flood, `cat` of a big file — is not parsed:
 * the model is rebuilt from the newest bytes instead. The worker parses
 * ~25–50 MB/s, so a catch-up costs at most ~80 ms of its time; a flood
 * arrives at ~60 MB/s and parsing it would cost ~20 ms of CPU per MB, which
 * on two cores halves the stream's throughput (bench/core.ts).
 */
const MAX_CATCH_UP_BYTES = 2 * 1024 * 1024;
/**
 * Bytes a rebuilt model is parsed from: the screen and its 1 000 lines of
 * scrollback of line output, exactly; a full-screen program redraws its
 * screen within far less.
 */
const REBUILD_TAIL_BYTES = 256 * 1024;

/**
 * One session's screen model: opened from the newest stored snapshot plus the
 * bytes after it (so the screen after a restart is the last stored one,
 * exactly), and brought up to date only when it is read — a client attaches,
 * a driver reads the screen, the screen is stored (at least every 5 s while
 * output flows, and once it goes quiet) — so output costs the worker nothing
 * in between, and a hundred busy sessions do not take turns in its few live
 * terminals. Rebuilt from the newest bytes after a flood. Parsing and
 * serializing happen in the screen worker.
 */
export class ScreenKeeper implements IDisposable {
  private snapshotTimer: NodeJS.Timeout | null = null;
  /** A store under way. */
  private inFlight: Promise<void> | null = null;
  /** Reads of the model (snapshots, text) not answered yet: it is not closed under them. */
  private readers = 0;
  /** release() was asked while reads were under way: the last one closes the model. */
  private releaseWanted = false;
  /** Stream offset up to which bytes went to the model (or were skipped, leaving it stale). */
  private fedTo = 0;
  private lastOutput = 0;
  /** When the screen was last stored (at first: when the session was set up, so a new session's first stored screen waits for quiet or 5 s). */
  private lastStored: number;

  constructor(
    private readonly id: string,
    private readonly log: OutputLog,
    private readonly size: () => { cols: number; rows: number },
    private readonly deps: { screen: ScreenService; store: SessionStore; clock: Clock; logger: Logger },
  ) {
    this.lastStored = deps.clock.monotonic();
  }

  /** Opens the screen model if it is not open. */
  ensureOpen(): void {
    const { screen, store } = this.deps;
    const id = this.id;
    if (screen.has(id)) return;
    const { cols, rows } = this.size();
    const end = this.log.end;
    const snap = end > 0 ? store.latestSnapshot(id, end) : undefined;
    const range = end > 0 ? store.outputRange(id) : { start: 0, end: 0 };
    const from = snap ? snap.offset : range.start;
    if (!snap && from > 0) this.deps.logger.warn({ from }, 'no stored snapshot and the oldest output is gone: the screen is rebuilt from what is kept');
    screen.open(id, { cols: snap?.cols ?? cols, rows: snap?.rows ?? rows, offset: from, base: snap?.data });
    if (snap && (snap.cols !== cols || snap.rows !== rows)) screen.resize(id, cols, rows);
    this.fedTo = from;
  }

  /** Output was appended to the log. Hot path: a clock read, at most a timer armed. */
  noteOutput(): void {
    this.lastOutput = this.deps.clock.monotonic();
    if (!this.snapshotTimer) this.armSnapshot();
  }

  resize(cols: number, rows: number): void {
    this.catchUp();
    this.deps.screen.resize(this.id, cols, rows);
  }

  /** The screen at the current end of the stream (the model is opened, fed and rebuilt if needed). */
  snapshot(): Promise<Snapshot> {
    this.ensureOpen();
    this.freshen();
    return this.reading(this.deps.screen.snapshot(this.id));
  }

  /** The visible screen as text lines; null if no model is open. */
  text(): Promise<string[] | null> {
    if (this.deps.screen.has(this.id)) this.freshen();
    return this.reading(this.deps.screen.text(this.id));
  }

  /** Counts a read of the model until it is answered (the worker serializes after a round trip: a close in between empties it). */
  private reading<T>(answer: Promise<T>): Promise<T> {
    this.readers++;
    return answer.finally(() => {
      this.readers--;
      if (this.readers === 0 && this.releaseWanted) this.close();
    });
  }

  /** Hands the bytes the model has not seen to it, or skips them (a flood): then the model is stale. */
  private catchUp(): void {
    const { screen, store } = this.deps;
    const end = this.log.end;
    if (end === this.fedTo || !screen.has(this.id)) return;
    let bytes: Buffer | null = null;
    let own = false;
    if (end - this.fedTo <= MAX_CATCH_UP_BYTES && !screen.isStale(this.id)) {
      bytes = this.log.copy(this.fedTo);
      own = bytes !== null;
      if (!bytes) {
        // Not all in memory (the ring was trimmed or outrun): the store has them.
        const stored = store.readOutput(this.id, this.fedTo, end);
        if (stored && stored.offset === this.fedTo && stored.data.length === end - this.fedTo) bytes = stored.data;
      }
    }
    // A copy of our own moves to the worker; the store's bytes may be views of buffers others hold: copied.
    if (bytes) screen.feed(this.id, bytes, { transfer: own });
    else screen.markStale(this.id);
    this.fedTo = end;
  }

  /** Brings the model to the end of the stream, rebuilding it from the newest bytes if it went stale. */
  private freshen(): void {
    const { screen, store } = this.deps;
    this.catchUp();
    if (!screen.isStale(this.id)) return;
    const end = this.log.end;
    const from = Math.max(0, end - REBUILD_TAIL_BYTES);
    let data = this.log.slice(Math.max(from, this.log.start));
    let offset = end - (data?.length ?? 0);
    if (offset > from) {
      // The ring was trimmed (an idle session): the store has the rest.
      const stored = store.readOutput(this.id, from, end);
      if (stored) ({ data, offset } = { data: stored.data, offset: stored.offset });
    }
    const { cols, rows } = this.size();
    screen.open(this.id, { cols, rows, offset, data: data ?? undefined });
    this.fedTo = end;
  }

  private armSnapshot(): void {
    this.snapshotTimer = setTimeout(() => {
      this.snapshotTimer = null;
      const now = this.deps.clock.monotonic();
      if (now - this.lastOutput >= SNAPSHOT_QUIET_MS || now - this.lastStored >= SNAPSHOT_EVERY_MS) void this.store();
      else this.armSnapshot();
    }, SNAPSHOT_QUIET_MS);
  }

  /**
   * Stores the screen at the current end of the stream. Sessions take turns
   * (ScreenService.inTurn): a hundred sessions going quiet together would
   * otherwise each copy their catch-up to the worker at once.
   */
  store(): Promise<void> {
    if (this.inFlight || !this.deps.screen.has(this.id)) return this.inFlight ?? Promise.resolve();
    this.inFlight = this.storeNow().finally(() => (this.inFlight = null));
    return this.inFlight;
  }

  /**
   * The session ended: its final screen is stored (after any store under way,
   * which may be of an earlier offset), then the model is let go if
   * `stillEnded()` — an ended session's screen no longer changes, so the
   * stored one is exact, and a later reader reopens from it. Kept, every ended
   * session held its folded screen (up to ~1 MB) until retention removed it.
   */
  async finish(stillEnded: () => boolean): Promise<void> {
    await this.inFlight;
    await this.store();
    if (stillEnded()) this.release();
  }

  /**
   * Lets go of the model, if open, once no read of it is under way: the next
   * reader reopens it from the stored screen and the bytes after it.
   */
  release(): void {
    if (this.readers > 0) this.releaseWanted = true;
    else this.close();
  }

  private close(): void {
    this.releaseWanted = false;
    if (this.snapshotTimer) clearTimeout(this.snapshotTimer);
    this.snapshotTimer = null;
    if (this.deps.screen.has(this.id)) this.deps.screen.close(this.id);
  }

  private async storeNow(): Promise<void> {
    this.lastStored = this.deps.clock.monotonic();
    try {
      await this.deps.screen.inTurn(async () => {
        if (!this.deps.screen.has(this.id)) return; // closed while waiting
        this.freshen();
        const snap = await this.reading(this.deps.screen.snapshot(this.id));
        this.deps.store.putSnapshot({ sessionId: this.id, offset: snap.offset, cols: snap.cols, rows: snap.rows, data: snap.data, createdAt: this.deps.clock.now() });
      });
    } catch (err) {
      // The next quiet period tries again; a missing snapshot only costs replay time after a crash.
      this.deps.logger.warn({ err: (err as Error).message }, 'screen snapshot failed');
    }
  }

  dispose(): void {
    this.close();
  }
}
