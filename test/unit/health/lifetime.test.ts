import { makeMonitor, HOUR } from './fakes';

describe('HealthMonitor lifetime', () => {
  it('warns exactly once at SESSION_WARNING_HOURS, with the wall time of the deadline', async () => {
    const { clock, monitor, add, lines } = makeMonitor();
    const s = add('a');
    clock.advance(20 * HOUR - 1);
    await monitor.tick();
    expect(s.warnings).toEqual([]);

    clock.advance(1);
    const report = await monitor.tick();
    expect(report.warned).toEqual(['a']);
    expect(s.warnings).toEqual([clock.now() + 4 * HOUR]);
    expect(lines.find((l) => l.msg === 'session lifetime warning')).toMatchObject({ sessionId: 'a', warningHours: 20, limitHours: 24 });

    for (let i = 0; i < 5; i++) {
      clock.advance(30 * 60_000);
      await monitor.tick();
    }
    expect(s.warnings).toHaveLength(1);
    expect(s.ends).toEqual([]);
  });

  it('warns once even if the session is slow to report isWarned()', async () => {
    const { clock, monitor, add } = makeMonitor();
    const s = add('a');
    s.warn = (at: number) => void s.warnings.push(at); // never flips isWarned()
    clock.advance(21 * HOUR);
    await monitor.tick();
    await monitor.tick();
    expect(s.warnings).toHaveLength(1);
  });

  it('a keep-alive clears the warning and a new one comes SESSION_WARNING_HOURS later', async () => {
    const { clock, monitor, add } = makeMonitor();
    const s = add('a');
    clock.advance(21 * HOUR);
    await monitor.tick();
    expect(s.warnings).toHaveLength(1);

    s.keepAlive();
    clock.advance(19 * HOUR);
    await monitor.tick();
    expect(s.warnings).toHaveLength(1);
    clock.advance(4 * HOUR); // 44 h after creation, 23 h after the keep-alive
    await monitor.tick();
    expect(s.ends).toEqual([]);
    expect(s.warnings).toHaveLength(2);
    expect(s.warnings[1]).toBe(clock.now() + 1 * HOUR);
  });

  it('expires exactly at SESSION_TIMEOUT_HOURS and not 1 ms before', async () => {
    const { clock, monitor, add, lines } = makeMonitor();
    const s = add('a');
    clock.advance(24 * HOUR - 1);
    await monitor.tick();
    expect(s.ends).toEqual([]);

    clock.advance(1);
    const report = await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'lifetime: 24h reached' }]);
    expect(report.ended).toEqual([{ sessionId: 'a', state: 'expired', reason: 'lifetime: 24h reached' }]);
    expect(lines.filter((l) => l.sessionId === 'a' && l.msg === 'session expired')).toEqual([
      expect.objectContaining({ state: 'expired', reason: 'lifetime: 24h reached', ageHours: 24, limitHours: 24 }),
    ]);
  });

  it('takes fractional hours', async () => {
    const { clock, monitor, add } = makeMonitor({ sessionTimeoutHours: 0.5, sessionWarningHours: 0.25 });
    const s = add('a');
    clock.advance(0.25 * HOUR);
    await monitor.tick();
    expect(s.warnings).toHaveLength(1);
    clock.advance(0.25 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'lifetime: 0.5h reached' }]);
  });

  it('a wall-clock jump of +25 h neither warns nor expires', async () => {
    const { clock, monitor, add } = makeMonitor();
    const s = add('a');
    clock.advance(HOUR);
    clock.jumpWall(25 * HOUR);
    await monitor.tick();
    expect(s.warnings).toEqual([]);
    expect(s.ends).toEqual([]);

    // The deadline is still 24 h of monotonic time; the warning shows it on the jumped wall clock.
    clock.advance(19 * HOUR);
    await monitor.tick();
    expect(s.warnings).toEqual([clock.now() + 4 * HOUR]);
    clock.advance(4 * HOUR - 1);
    await monitor.tick();
    expect(s.ends).toEqual([]);
    clock.advance(1);
    await monitor.tick();
    expect(s.ends).toHaveLength(1);
  });

  it('a wall-clock jump of -1 year does not make a session immortal', async () => {
    const { clock, monitor, add } = makeMonitor();
    const s = add('a');
    clock.jumpWall(-365 * 24 * HOUR);
    clock.advance(20 * HOUR);
    await monitor.tick();
    expect(s.warnings).toEqual([clock.now() + 4 * HOUR]);
    clock.advance(4 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'lifetime: 24h reached' }]);
  });

  it('leaves sessions that are not live alone', async () => {
    const { clock, monitor, add, sampler } = makeMonitor();
    const s = add('a');
    s.live = false;
    clock.advance(30 * HOUR);
    const report = await monitor.tick();
    expect(report.sessions).toBe(0);
    expect(s.ends).toEqual([]);
    expect(s.usage).toEqual([]);
    expect(sampler.calls).toEqual([[]]);
  });
});

describe('HealthMonitor idle culling', () => {
  it('ends a session with no client and no turn after IDLE_TIMEOUT_HOURS, reason exactly "idle"', async () => {
    const { clock, monitor, add, lines } = makeMonitor({ idleTimeoutHours: 2 });
    const s = add('a');
    clock.advance(2 * HOUR - 1);
    await monitor.tick();
    expect(s.ends).toEqual([]);
    clock.advance(1);
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'idle' }]);
    expect(lines.find((l) => l.sessionId === 'a' && l.reason === 'idle')).toMatchObject({ msg: 'session expired', idleHours: 2, limitHours: 2 });
  });

  it('counts from the last activity, not from creation', async () => {
    const { clock, monitor, add } = makeMonitor({ idleTimeoutHours: 2 });
    const s = add('a');
    clock.advance(HOUR);
    s.activity = clock.monotonic();
    clock.advance(HOUR + 30 * 60_000);
    await monitor.tick();
    expect(s.ends).toEqual([]);
    clock.advance(30 * 60_000);
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'idle' }]);
  });

  it('never culls a session with a client attached', async () => {
    const { clock, monitor, add } = makeMonitor({ idleTimeoutHours: 1 });
    const s = add('a');
    s.clients = 1;
    clock.advance(10 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([]);
  });

  it('never culls a busy session', async () => {
    const { clock, monitor, add } = makeMonitor({ idleTimeoutHours: 1 });
    const s = add('a');
    s.busy = true;
    clock.advance(10 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([]);
    s.busy = false;
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'idle' }]);
  });

  it('is off at IDLE_TIMEOUT_HOURS=0', async () => {
    const { clock, monitor, add } = makeMonitor({ idleTimeoutHours: 0 });
    const s = add('a');
    clock.advance(23 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([]);
  });

  it('a lifetime expiry wins over idleness and the session is ended once', async () => {
    const { clock, monitor, add } = makeMonitor({ idleTimeoutHours: 1 });
    const s = add('a');
    clock.advance(24 * HOUR);
    await monitor.tick();
    expect(s.ends).toEqual([{ state: 'expired', reason: 'lifetime: 24h reached' }]);
  });
});
