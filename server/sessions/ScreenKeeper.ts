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
 * One session's screen model: opened lazily (from the newest stored
 * snapshot plus the bytes after it, so the screen after a restart is the
 * last stored one, exactly), and stored back while output flows and when it
 * goes quiet. Serializing happens in the screen worker, off the output path.
 */
export class ScreenKeeper implements IDisposable {
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;
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
    if (from < this.log.start) {
      const stored = store.readOutput(id, from, this.log.start);
      if (stored && stored.offset === from) screen.feed(id, stored.data);
    }
    const inMemory = this.log.slice(Math.max(from, this.log.start));
    if (inMemory && inMemory.length) screen.feed(id, inMemory);
  }

  /** Output went to the model (the session feeds it): arms the snapshot timer. Hot path: no allocation. */
  noteOutput(chunk: Buffer): void {
    this.deps.screen.feed(this.id, chunk);
    this.lastOutput = this.deps.clock.monotonic();
    if (!this.timer) this.arm();
  }

  resize(cols: number, rows: number): void {
    this.deps.screen.resize(this.id, cols, rows);
  }

  /** The screen at the current end of the stream (the model is opened if needed). */
  snapshot(): Promise<Snapshot> {
    this.ensureOpen();
    return this.deps.screen.snapshot(this.id, (from) => {
      const start = Math.max(from, this.log.start);
      const data = this.log.slice(start);
      return data ? { offset: start, data } : null;
    });
  }

  text(): Promise<string[] | null> {
    return this.deps.screen.text(this.id);
  }

  private arm(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const now = this.deps.clock.monotonic();
      if (now - this.lastOutput >= SNAPSHOT_QUIET_MS || now - this.lastStored >= SNAPSHOT_EVERY_MS) void this.store();
      else this.arm();
    }, SNAPSHOT_QUIET_MS);
  }

  /** Stores the screen at the current end of the stream. */
  async store(): Promise<void> {
    if (this.inFlight || !this.deps.screen.has(this.id)) return;
    this.inFlight = true;
    this.lastStored = this.deps.clock.monotonic();
    try {
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
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.deps.screen.close(this.id);
  }
}
