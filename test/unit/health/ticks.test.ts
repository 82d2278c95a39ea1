import { ManualClock } from '../../../server/common/clock';
import { silentLogger } from '../../../server/common/log';
import { HealthMonitor } from '../../../server/health/HealthMonitor';
import { baseConfig, deferred, FakePool, FakeSampler, FakeSession, HOUR, makeMonitor } from './fakes';

describe('HealthMonitor ticks', () => {
  it('never overlaps: a tick while one is sampling is skipped, not queued', async () => {
    const { clock, monitor, add, sampler } = makeMonitor();
    const s = add('a');
    const gate = deferred();
    sampler.gate = gate.promise;
    const first = monitor.tick();
    const second = await monitor.tick();
    expect(second.skipped).toBe(true);
    expect(sampler.calls).toHaveLength(1);

    sampler.gate = null;
    gate.resolve();
    const report = await first;
    expect(report.skipped).toBe(false);
    expect(s.usage).toHaveLength(1);

    clock.advance(1000);
    expect((await monitor.tick()).skipped).toBe(false);
    expect(sampler.calls).toHaveLength(2);
  });

  it('an exception in one session does not stop the others, and is logged', async () => {
    const { clock, monitor, add, sampler, lines } = makeMonitor();
    const broken = add('broken');
    const other = add('other');
    const third = add('third');
    broken.lifetimeStart = () => {
      throw new Error('lifetimeStart exploded');
    };
    sampler.set('other', 10);
    sampler.set('third', 10);
    clock.advance(24 * HOUR);
    const report = await monitor.tick();
    expect(other.ends).toEqual([{ state: 'expired', reason: 'lifetime: 24h reached' }]);
    expect(third.ends).toEqual([{ state: 'expired', reason: 'lifetime: 24h reached' }]);
    expect(report.errors).toBe(1);
    expect(lines.find((l) => l.msg === 'health rule failed for session')).toMatchObject({ level: 50, sessionId: 'broken', err: expect.objectContaining({ message: 'lifetimeStart exploded' }) });

    // A session whose lifetime rule throws is still sampled and recorded.
    const fresh = add('fresh');
    sampler.set('fresh', 10);
    const next = await monitor.tick();
    expect(broken.usage).toHaveLength(2);
    expect(fresh.usage).toHaveLength(1);
    expect(next.errors).toBe(1);
  });

  it('a throw while recording one session still records the others, and its limits still hold', async () => {
    const { monitor, add, sampler } = makeMonitor();
    const a = add('a');
    const b = add('b');
    const c = add('c');
    a.recordUsage = () => {
      throw new Error('boom');
    };
    c.recordUsage = a.recordUsage;
    sampler.set('a', 10);
    sampler.set('b', 20);
    sampler.set('c', 900);
    const report = await monitor.tick();
    expect(b.usage).toHaveLength(1);
    expect(report.errors).toBe(2);
    expect(report.totalMemoryMB).toBe(30);
    expect(c.ends).toEqual([{ state: 'killed', reason: 'memory_limit: 900 MB > 500 MB' }]);
  });

  it('a failing sampler is logged; lifetimes are still enforced and nothing is recorded', async () => {
    const { clock, monitor, add, sampler, lines } = makeMonitor();
    const old = add('old');
    clock.advance(HOUR);
    const young = add('young');
    sampler.fail = new Error('EMFILE');
    clock.advance(23 * HOUR);
    const report = await monitor.tick();
    expect(old.ends).toHaveLength(1);
    expect(young.usage).toEqual([]);
    expect(report.totalMemoryMB).toBeNull();
    expect(lines.find((l) => l.msg === 'resource sampling failed')).toMatchObject({ level: 50 });
  });

  it('does not end a session again while its end() is under way', async () => {
    const { clock, monitor, add } = makeMonitor();
    const s = add('a');
    const gate = deferred();
    s.onEnd = () => gate.promise; // stays live until the tree is gone
    clock.advance(24 * HOUR);
    await monitor.tick();
    await monitor.tick();
    expect(s.ends).toHaveLength(1);
    gate.resolve();
  });

  it('logs an end() that fails and tries again on a later tick', async () => {
    const { clock, monitor, add, lines } = makeMonitor();
    const s = add('a');
    s.onEnd = () => Promise.reject(new Error('kill failed'));
    clock.advance(24 * HOUR);
    await monitor.tick();
    await new Promise((r) => setImmediate(r));
    expect(lines.find((l) => l.msg === 'ending session failed')).toMatchObject({ sessionId: 'a', reason: 'lifetime: 24h reached' });
    await monitor.tick();
    expect(s.ends).toHaveLength(2);
  });

  it('records lastTick (wall time and duration) for GET /api/health', async () => {
    const { clock, monitor, add } = makeMonitor();
    add('a');
    expect(monitor.lastTick).toBeNull();
    const at = clock.now();
    const report = await monitor.tick();
    expect(monitor.lastTick).toEqual({ at, durationMs: report.durationMs });
    expect(report.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('start() ticks every HEALTH_CHECK_INTERVAL_SECONDS (fractions allowed) until disposed', async () => {
    const clock = new ManualClock();
    const pool = new FakePool();
    const sampler = new FakeSampler();
    const session = new FakeSession('a', clock);
    pool.sessions.push(session);
    const monitor = new HealthMonitor({ ...baseConfig, healthCheckIntervalSeconds: 0.02 }, { clock, pool, sampler, logger: silentLogger() });
    monitor.start();
    monitor.start(); // idempotent: still one timer
    await waitFor(() => session.usage.length >= 3);
    monitor.dispose();
    const seen = session.usage.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(session.usage.length).toBe(seen);
    expect((await monitor.tick()).skipped).toBe(true);
  });

  it('does not act on a sample that arrives after dispose()', async () => {
    const { monitor, add, sampler } = makeMonitor();
    const s = add('a');
    sampler.set('a', 10_000);
    const gate = deferred();
    sampler.gate = gate.promise;
    const pending = monitor.tick();
    monitor.dispose();
    gate.resolve();
    await pending;
    expect(s.ends).toEqual([]);
    expect(s.usage).toEqual([]);
    expect(monitor.lastTick).toBeNull();
  });

  it('logs a summary of each tick at debug level', async () => {
    const { monitor, add, sampler, lines } = makeMonitor();
    add('a');
    sampler.set('a', 42);
    await monitor.tick();
    expect(lines.find((l) => l.msg === 'health tick')).toMatchObject({ level: 20, component: 'health', sessions: 1, sampled: 1, totalMemoryMB: 42 });
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
