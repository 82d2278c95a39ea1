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
/** Output reaches the model in one batch per this interval (one message to the worker, not one per chunk). */
const FEED_EVERY_MS = 50;
/**
 * More than this in one batch (~10 MB/s) is a flood — `cat` of a big file —
 * and is not parsed: the worker parses ~25–50 MB/s, and a flood arrives at
 * ~60 MB/s; parsing it costs ~20 ms of CPU per MB, which on two cores halves
 * the stream's throughput (bench/core.ts). The model is rebuilt from the
 * newest bytes when it is next read instead. Agents' own redraws stay far
 * below this.
 */
const FLOOD_BYTES = 512 * 1024;
/**
 * Bytes a rebuilt model is parsed from: the screen and its 1 000 lines of
 * scrollback of line output, exactly; a full-screen program redraws its
 * screen within far less.
 */
const REBUILD_TAIL_BYTES = 256 * 1024;

/**
 * One session's screen model: opened from the newest stored snapshot plus the
 * bytes after it (so the screen after a restart is the last stored one,
 * exactly), fed in batches off the output path, rebuilt from the newest bytes
 * after a flood, and stored back while output flows and when it goes quiet.
 * Parsing and serializing happen in the screen worker.
 */
export class ScreenKeeper implements IDisposable {
  private snapshotTimer: NodeJS.Timeout | null = null;
  private feedTimer: NodeJS.Timeout | null = null;
  private inFlight = false;
  /** Stream offset up to which bytes went to the model (or were skipped, leaving it stale). */
  private fedTo = 0;
  private lastOutput = 0;
  private lastStored = 0;

  constructor(
    private readonly id: string,
    private readonly log: OutputLog,
    private readonly size: () => { cols: number; rows: number },
    private readonly deps: { screen: ScreenService; store: SessionStore; clock: Clock; logger: Logger },
  ) {}

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
    if (end - from > FLOOD_BYTES * 4) {
      // Far behind (a flood just before a restart): rebuilding from the tail is cheaper than replaying it all.
      screen.markStale(id);
      this.fedTo = end;
      return;
    }
    if (from < this.log.start) {
      const stored = store.readOutput(id, from, this.log.start);
      if (stored && stored.offset === from) {
        screen.feed(id, stored.data);
        this.fedTo = this.log.start;
      }
    }
    this.catchUp();
  }

  /** Output was appended to the log. Hot path: at most arms a timer. */
  noteOutput(): void {
    if (!this.feedTimer) this.feedTimer = setTimeout(() => this.onFeedTimer(), FEED_EVERY_MS);
  }

  resize(cols: number, rows: number): void {
    this.catchUp();
    this.deps.screen.resize(this.id, cols, rows);
  }

  /** The screen at the current end of the stream (the model is opened, fed and rebuilt if needed). */
  snapshot(): Promise<Snapshot> {
    this.ensureOpen();
    this.freshen();
    return this.deps.screen.snapshot(this.id);
  }

  /** The visible screen as text lines; null if no model is open. */
  text(): Promise<string[] | null> {
    if (this.deps.screen.has(this.id)) this.freshen();
    return this.deps.screen.text(this.id);
  }

  private onFeedTimer(): void {
    this.feedTimer = null;
    if (this.log.end === this.fedTo) return;
    this.lastOutput = this.deps.clock.monotonic();
    this.catchUp();
    if (!this.snapshotTimer) this.armSnapshot();
  }

  /** Hands the bytes since the last batch to the model, or skips them (a flood): then the model is stale. */
  private catchUp(): void {
    const { screen } = this.deps;
    const end = this.log.end;
    if (end === this.fedTo || !screen.has(this.id)) return;
    const pending = end - this.fedTo;
    const bytes = pending <= FLOOD_BYTES && !screen.isStale(this.id) ? this.log.copy(this.fedTo) : null;
    if (bytes) screen.feed(this.id, bytes, { transfer: true });
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

  /** Stores the screen at the current end of the stream. */
  async store(): Promise<void> {
    if (this.inFlight || !this.deps.screen.has(this.id)) return;
    this.inFlight = true;
    this.lastStored = this.deps.clock.monotonic();
    try {
      this.freshen();
      const snap = await this.deps.screen.snapshot(this.id);
      this.deps.store.putSnapshot({ sessionId: this.id, offset: snap.offset, cols: snap.cols, rows: snap.rows, data: snap.data, createdAt: this.deps.clock.now() });
    } catch (err) {
      // The next quiet period tries again; a missing snapshot only costs replay time after a crash.
      this.deps.logger.warn({ err: (err as Error).message }, 'screen snapshot failed');
    } finally {
      this.inFlight = false;
    }
  }

  dispose(): void {
    for (const timer of [this.snapshotTimer, this.feedTimer]) if (timer) clearTimeout(timer);
    this.snapshotTimer = this.feedTimer = null;
    this.deps.screen.close(this.id);
  }
}
