/**
 * Time as the daemon sees it. Lifetimes and limits are measured on `monotonic()`
 * so that a wall-clock jump neither expires nor immortalises a session; `now()` is
 * only for timestamps shown to people.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. */
  now(): number;
  /** Milliseconds on a clock that never jumps. Origin is arbitrary. */
  monotonic(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
};

/** A clock driven by hand, for tests. */
export class ManualClock implements Clock {
  constructor(private wall = Date.UTC(2026, 0, 1), private mono = 1_000_000) {}
  now(): number {
    return this.wall;
  }
  monotonic(): number {
    return this.mono;
  }
  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
  /** A wall-clock jump: the monotonic clock does not move. */
  jumpWall(ms: number): void {
    this.wall += ms;
  }
}

/**
 * Converts a monotonic deadline to the wall-clock time it will be reached,
 * as the clock stands now. Used to show `expiresAt`.
 */
export function wallTimeOf(clock: Clock, monotonicMs: number): number {
  return clock.now() + (monotonicMs - clock.monotonic());
}

export function iso(ms: number | null | undefined): string | null {
  return ms == null ? null : new Date(ms).toISOString();
}
