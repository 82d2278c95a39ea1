import { Clock } from '../common/clock';
import { releaseMemorySoon } from '../common/memory';
import type { SessionStore } from '../store/SessionStore';
import { OutputLog } from './OutputLog';

/** A session whose output has been quiet this long keeps its bytes only in the store. */
const RING_TRIM_AFTER_MS = 20_000;
/** A ring dropped with this much in it has the allocator hand memory back to the OS (common/memory.ts). */
const RELEASE_AFTER_BYTES = 256 * 1024;

/**
 * A session quiet for a while drops its in-memory ring: its bytes are in the
 * store (which serves resumes and history), and a hundred idle sessions must
 * not hold a megabyte each. Not while the store is degraded (unsaved bytes
 * live only in memory then).
 */
export class RingTrimmer {
  private timer: NodeJS.Timeout | null = null;
  private lastOutputMono = 0;

  constructor(
    private readonly sessionId: string,
    private readonly log: OutputLog,
    private readonly deps: { store: SessionStore; clock: Clock },
  ) {}

  /** Output came (the hot path: one clock read, and a timer only if none is armed). */
  noteOutput(): void {
    this.lastOutputMono = this.deps.clock.monotonic();
    if (!this.timer) this.arm();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(delay = RING_TRIM_AFTER_MS): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const { store, clock } = this.deps;
      const quietFor = clock.monotonic() - this.lastOutputMono;
      if (quietFor < RING_TRIM_AFTER_MS) return this.arm(RING_TRIM_AFTER_MS - quietFor + 10);
      if (store.health().status !== 'ok') return this.arm();
      store.flush();
      if (store.health().status === 'ok' && store.outputRange(this.sessionId).end >= this.log.end) {
        const freed = this.log.bytesInMemory;
        this.log.clear();
        if (freed >= RELEASE_AFTER_BYTES) releaseMemorySoon();
      }
    }, delay);
    this.timer.unref();
  }
}
