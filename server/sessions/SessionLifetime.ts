import { Clock, wallTimeOf } from '../common/clock';
import type { SessionRecord } from '../store/SessionStore';

/** A keep-alive moves the stored deadline only when it moved at least this much. */
const KEEPALIVE_PERSIST_MS = 1_000;

/**
 * A session's two clocks for the health monitor, on the monotonic clock so a
 * wall-clock jump neither expires nor rejuvenates anyone: when its lifetime
 * (re)started, and when a user or client last did something. The wall-clock
 * deadline (`record.expiresAt`) is derived from the first and stored.
 */
export class SessionLifetime {
  private startMono: number;
  private lastActivityMono: number;
  /** The deadline the store has: a keep-alive rewrites the record only when it moved enough. */
  private persistedExpiresAt = 0;

  constructor(
    private readonly record: SessionRecord,
    private readonly clock: Clock,
    private readonly timeoutHours: number,
    private readonly persist: () => void,
  ) {
    this.startMono = this.monoFromWall(record.expiresAt);
    this.lastActivityMono = clock.monotonic();
  }

  /** Monotonic time the current lifetime started (a stored session's is derived from its remaining time). */
  get start(): number {
    return this.startMono;
  }

  /** Monotonic time of the last activity (input, a turn, a client coming or going). */
  get lastActivity(): number {
    return this.lastActivityMono;
  }

  /** Restarts the lifetime and clears the warning. */
  restart(): void {
    this.startMono = this.clock.monotonic();
    this.record.expiresAt = Math.round(wallTimeOf(this.clock, this.startMono + this.timeoutHours * 3_600_000));
    const wasWarned = this.record.warnedAt !== null;
    this.record.warnedAt = null;
    // Every keystroke is a keep-alive: the stored deadline is refreshed at most once a second, off the input path's way.
    if (wasWarned || this.record.expiresAt - this.persistedExpiresAt >= KEEPALIVE_PERSIST_MS) this.persist();
  }

  /** Activity for idle culling and LRU (not a keep-alive by itself). */
  noteActivity(): void {
    this.lastActivityMono = this.clock.monotonic();
    this.record.lastActivityAt = this.clock.now();
  }

  /** The record was written: its deadline is the stored one. */
  notePersisted(): void {
    this.persistedExpiresAt = this.record.expiresAt ?? 0;
  }

  private monoFromWall(expiresAt: number | null): number {
    if (expiresAt === null) return this.clock.monotonic();
    const remaining = expiresAt - this.clock.now();
    return this.clock.monotonic() + remaining - this.timeoutHours * 3_600_000;
  }
}
