import { ManualClock, systemClock } from '../../../server/common/clock';
import { silentLogger } from '../../../server/common/log';
import { ScreenKeeper } from '../../../server/sessions/ScreenKeeper';
import { ScreenService } from '../../../server/sessions/ScreenService';
import { OutputLog } from '../../../server/sessions/OutputLog';
import { RingTrimmer } from '../../../server/sessions/RingTrimmer';
import { SessionLifetime } from '../../../server/sessions/SessionLifetime';
import { MemoryStore } from '../../../server/store/MemoryStore';
import type { StoreHealth } from '../../../server/store/SessionStore';
import { record } from '../store/storeContract';

const HOUR = 3_600_000;

describe('a quiet session drops its in-memory ring (RingTrimmer)', () => {
  let clock: ManualClock;
  let store: MemoryStore;
  let log: OutputLog;
  let trimmer: RingTrimmer;

  /** Moves the clock and the timers together. */
  const pass = (ms: number) => {
    clock.advance(ms);
    jest.advanceTimersByTime(ms);
  };
  /** Output as a session sees it: into the ring and the store, then noted. */
  const output = (bytes: number, stored = true) => {
    const chunk = Buffer.alloc(bytes, 0x61);
    const at = log.append(chunk);
    if (stored) store.appendOutput('S1', at, chunk);
    trimmer.noteOutput();
  };

  beforeEach(() => {
    jest.useFakeTimers();
    clock = new ManualClock();
    store = new MemoryStore();
    log = new OutputLog(1024 * 1024);
    trimmer = new RingTrimmer('S1', log, { store, clock });
  });
  afterEach(() => {
    trimmer.dispose();
    jest.clearAllTimers();
    jest.useRealTimers();
  });

  it('drops the ring 20 s after the last output once the store has every byte, keeping the stream offset', () => {
    output(300 * 1024);
    pass(19_999);
    expect(log.bytesInMemory).toBe(300 * 1024);
    pass(20);
    expect(log.bytesInMemory).toBe(0);
    expect(log.end).toBe(300 * 1024);
  });

  it('keeps the ring while output goes on, and drops it 20 s after the last', () => {
    output(1000);
    pass(15_000);
    output(1000);
    pass(10_000); // the first check comes 20 s after the first output: only 10 s quiet
    expect(log.bytesInMemory).toBe(2000);
    pass(10_100);
    expect(log.bytesInMemory).toBe(0);
  });

  it('keeps bytes the store does not have', () => {
    output(1000);
    output(1000, false);
    pass(60_000);
    expect(log.bytesInMemory).toBe(2000);
  });

  it('keeps the ring while the store is degraded, and drops it once it is ok again', () => {
    let health: StoreHealth = { status: 'degraded', detail: 'disk full' };
    jest.spyOn(store, 'health').mockImplementation(() => health);
    output(1000);
    pass(60_000);
    expect(log.bytesInMemory).toBe(1000);
    health = { status: 'ok' };
    pass(20_100);
    expect(log.bytesInMemory).toBe(0);
  });
});

describe('a session lifetime on the monotonic clock (SessionLifetime)', () => {
  it('restarts with a deadline of now + the timeout, clears the warning and stores it', () => {
    const clock = new ManualClock();
    const rec = record({ expiresAt: null, warnedAt: clock.now() });
    const persist = jest.fn();
    const lifetime = new SessionLifetime(rec, clock, 24, persist);
    clock.advance(5_000);
    lifetime.restart();
    expect(lifetime.start).toBe(clock.monotonic());
    expect(rec.expiresAt).toBe(clock.now() + 24 * HOUR);
    expect(rec.warnedAt).toBeNull();
    expect(persist).toHaveBeenCalledTimes(1);
  });

  it('stores a keep-alive deadline at most once a second (every keystroke is a keep-alive)', () => {
    const clock = new ManualClock();
    const rec = record({ expiresAt: null, warnedAt: null });
    let writes = 0;
    const lifetime = new SessionLifetime(rec, clock, 24, () => {
      writes++;
      lifetime.notePersisted();
    });
    lifetime.restart();
    for (let i = 0; i < 9; i++) {
      clock.advance(100);
      lifetime.restart();
    }
    expect(writes).toBe(1);
    clock.advance(100);
    lifetime.restart(); // 1 s after the stored one
    expect(writes).toBe(2);
    rec.warnedAt = clock.now();
    clock.advance(1);
    lifetime.restart(); // a warned session's cleared warning is stored at once
    expect(writes).toBe(3);
  });

  it("derives a stored session's start from its remaining time, and a wall-clock jump does not move it", () => {
    const clock = new ManualClock();
    const rec = record({ expiresAt: clock.now() + 2 * HOUR });
    const lifetime = new SessionLifetime(rec, clock, 24, () => undefined);
    expect(lifetime.start).toBe(clock.monotonic() - 22 * HOUR);
    clock.jumpWall(5 * HOUR);
    expect(lifetime.start).toBe(clock.monotonic() - 22 * HOUR);
  });

  it('notes activity on both clocks', () => {
    const clock = new ManualClock();
    const rec = record();
    const lifetime = new SessionLifetime(rec, clock, 24, () => undefined);
    clock.advance(7_000);
    lifetime.noteActivity();
    expect(lifetime.lastActivity).toBe(clock.monotonic());
    expect(rec.lastActivityAt).toBe(clock.now());
  });
});

describe('an ended session lets go of its screen model (ScreenKeeper.finish)', () => {
  const screen = new ScreenService();
  afterAll(() => screen.dispose());

  it('stores the final screen, closes the model, and shows the same screen when reopened from the store', async () => {
    const store = new MemoryStore();
    const log = new OutputLog(1024 * 1024);
    const keeper = new ScreenKeeper('S9', log, () => ({ cols: 80, rows: 24 }), { screen, store, clock: systemClock, logger: silentLogger() });
    keeper.ensureOpen();
    for (let i = 0; i < 300; i++) {
      const chunk = Buffer.from(`line ${i} \x1b[1mbold\x1b[0m\r\n`);
      store.appendOutput('S9', log.append(chunk), chunk);
    }
    const before = await keeper.snapshot();
    let ended = true;
    await keeper.finish(() => ended);
    expect(screen.has('S9')).toBe(false);
    expect(store.latestSnapshot('S9', log.end)).toMatchObject({ offset: log.end, data: before.data });
    // A client attaching later: the model is reopened from the stored screen, exactly.
    const after = await keeper.snapshot();
    expect(after).toEqual(before);
    keeper.release();
    expect(screen.has('S9')).toBe(false);
    // Revived before the final store finished: the live session keeps its model.
    keeper.ensureOpen();
    ended = false;
    await keeper.finish(() => ended);
    expect(screen.has('S9')).toBe(true);
    keeper.dispose();
    expect(screen.has('S9')).toBe(false);
  });
});
