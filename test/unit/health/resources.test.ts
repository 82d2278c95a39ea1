import { makeMonitor, MiB } from './fakes';

const SECOND = 1000;

describe('HealthMonitor resources', () => {
  it('records the latest sample on every live session, null when it has no process', async () => {
    const { monitor, add, sampler } = makeMonitor();
    const a = add('a');
    const b = add('b');
    const c = add('c');
    c.target = null;
    sampler.set('a', 100, 5);
    const report = await monitor.tick();
    expect(a.usage).toEqual([{ memoryBytes: 100 * MiB, cpuPercent: 5, pids: [4242] }]);
    expect(b.usage).toEqual([null]); // a target, but the sampler found no process
    expect(c.usage).toEqual([null]);
    expect(sampler.calls[0].map((t) => t.sessionId)).toEqual(['a', 'b']);
    expect(report).toMatchObject({ sessions: 3, sampled: 1, totalMemoryMB: 100 });
    expect(monitor.memory).toEqual({ usedMB: 100, maxMB: 2048 });
  });

  it('kills a session over MAX_MEMORY_PER_SESSION_MB with the figure in the reason and one log line', async () => {
    const { monitor, add, sampler, lines } = makeMonitor();
    const a = add('a');
    const b = add('b');
    sampler.set('a', 500); // at the limit: fine
    sampler.set('b', 612.34);
    await monitor.tick();
    expect(a.ends).toEqual([]);
    expect(b.ends).toEqual([{ state: 'killed', reason: 'memory_limit: 612.3 MB > 500 MB' }]);
    const killed = lines.filter((l) => l.msg === 'session killed');
    expect(killed).toEqual([
      expect.objectContaining({ level: 40, component: 'health', sessionId: 'b', reason: 'memory_limit: 612.3 MB > 500 MB', memoryMB: 612.3, limitMB: 500 }),
    ]);
  });

  it('lets a CPU burst shorter than CPU_SUSTAIN_SECONDS pass', async () => {
    const { clock, monitor, add, sampler } = makeMonitor({ cpuSustainSeconds: 60 });
    const a = add('a');
    sampler.set('a', 10, 5);
    await monitor.tick();
    sampler.set('a', 10, 190);
    for (let i = 0; i < 5; i++) {
      clock.advance(10 * SECOND); // over the limit from t=0 to t=50 s
      await monitor.tick();
    }
    sampler.set('a', 10, 20);
    clock.advance(10 * SECOND);
    await monitor.tick();
    sampler.set('a', 10, 190); // a new burst starts the count afresh
    for (let i = 0; i < 6; i++) {
      clock.advance(10 * SECOND);
      await monitor.tick();
    }
    expect(a.ends).toEqual([]);
  });

  it('kills CPU over the limit without a break for longer than CPU_SUSTAIN_SECONDS', async () => {
    const { clock, monitor, add, sampler, lines } = makeMonitor({ cpuSustainSeconds: 60, cpuUsageLimitPercent: 80 });
    const a = add('a');
    sampler.set('a', 10, 5);
    await monitor.tick();
    sampler.set('a', 10, 99.66);
    // Each sample is the rate since the previous one: over-limit since t=0.
    for (let i = 0; i < 6; i++) {
      clock.advance(10 * SECOND);
      await monitor.tick();
    }
    expect(a.ends).toEqual([]); // 60 s is not longer than 60 s
    clock.advance(10 * SECOND);
    await monitor.tick();
    expect(a.ends).toEqual([{ state: 'killed', reason: 'cpu_limit: 99.7% > 80% for 70 s' }]);
    expect(lines.find((l) => l.msg === 'session killed')).toMatchObject({ sessionId: 'a', cpuPercent: 99.7, limitPercent: 80, overSeconds: 70, sustainSeconds: 60 });
  });

  it('counts a run from its first tick when there was no earlier sample', async () => {
    const { clock, monitor, add, sampler } = makeMonitor({ cpuSustainSeconds: 20 });
    const a = add('a');
    sampler.set('a', 10, 150);
    await monitor.tick(); // first sample ever: the run starts now
    clock.advance(20 * SECOND);
    await monitor.tick();
    expect(a.ends).toEqual([]);
    clock.advance(1);
    await monitor.tick();
    expect(a.ends).toEqual([{ state: 'killed', reason: 'cpu_limit: 150% > 80% for 20 s' }]);
  });

  it('a session with no process resets its CPU run', async () => {
    const { clock, monitor, add, sampler } = makeMonitor({ cpuSustainSeconds: 30 });
    const a = add('a');
    sampler.set('a', 10, 150);
    await monitor.tick();
    clock.advance(20 * SECOND);
    await monitor.tick();
    sampler.usage.delete('a');
    clock.advance(20 * SECOND);
    await monitor.tick();
    sampler.set('a', 10, 150);
    clock.advance(20 * SECOND);
    await monitor.tick();
    expect(a.ends).toEqual([]);
  });
});

describe('HealthMonitor total memory', () => {
  it('sets pressure over MAX_TOTAL_MEMORY_GB, ends the least recently active idle session on the next tick, and clears it', async () => {
    const { clock, monitor, add, sampler, pool, lines } = makeMonitor({ maxTotalMemoryGB: 1 });
    const oldest = add('oldest-busy');
    const watched = add('old-with-client');
    const victim = add('victim');
    const recent = add('recent');
    const empty = add('no-process'); // least recent of all, but frees nothing
    oldest.busy = true;
    oldest.activity = clock.monotonic() - 5000;
    watched.clients = 2;
    watched.activity = clock.monotonic() - 4000;
    victim.activity = clock.monotonic() - 3000;
    recent.activity = clock.monotonic() - 1000;
    empty.activity = clock.monotonic() - 9000;
    for (const id of ['oldest-busy', 'old-with-client', 'victim', 'recent']) sampler.set(id, 300);

    let report = await monitor.tick(); // 1200 MB > 1024 MB: pressure, nobody ended yet
    expect(pool.pressure).toEqual({ usedMB: 1200, maxMB: 1024 });
    expect(report.memoryPressure).toEqual({ usedMB: 1200, maxMB: 1024 });
    expect(report.ended).toEqual([]);
    expect(lines.filter((l) => l.msg === 'memory pressure: new sessions refused')).toEqual([expect.objectContaining({ usedMB: 1200, maxMB: 1024 })]);

    clock.advance(30 * SECOND);
    report = await monitor.tick(); // still over with pressure set: the victim goes
    expect(report.ended).toEqual([{ sessionId: 'victim', state: 'killed', reason: 'total_memory_limit' }]);
    expect(victim.ends).toEqual([{ state: 'killed', reason: 'total_memory_limit' }]);
    expect(lines.find((l) => l.reason === 'total_memory_limit')).toMatchObject({ msg: 'session killed', sessionId: 'victim', usedMB: 1200, maxMB: 1024, idleSeconds: 33 });
    for (const s of [oldest, watched, recent, empty]) expect(s.ends).toEqual([]);

    sampler.usage.delete('victim');
    clock.advance(30 * SECOND);
    report = await monitor.tick(); // 900 MB: under again
    expect(report.totalMemoryMB).toBe(900);
    expect(pool.pressure).toBeNull();
    expect(pool.pressureCalls).toEqual([{ usedMB: 1200, maxMB: 1024 }, { usedMB: 1200, maxMB: 1024 }, null]);
    expect(lines.filter((l) => l.msg === 'memory pressure cleared')).toHaveLength(1);
  });

  it('ends nobody when every session is busy or watched, and keeps the pressure', async () => {
    const { monitor, add, sampler, pool, lines } = makeMonitor({ maxTotalMemoryGB: 0.5 });
    const a = add('a');
    const b = add('b');
    a.busy = true;
    b.clients = 1;
    sampler.set('a', 300);
    sampler.set('b', 300);
    for (let i = 0; i < 4; i++) await monitor.tick();
    expect(a.ends).toEqual([]);
    expect(b.ends).toEqual([]);
    expect(pool.pressure).toEqual({ usedMB: 600, maxMB: 512 });
    expect(lines.filter((l) => l.msg === 'memory pressure: no idle session without clients to end')).toHaveLength(1); // once, not every tick
  });

  it('does not count a session killed for its own memory in the total', async () => {
    const { monitor, add, sampler, pool } = makeMonitor({ maxTotalMemoryGB: 0.5, maxMemoryPerSessionMB: 400 });
    add('a');
    add('b');
    sampler.set('a', 450);
    sampler.set('b', 100);
    const report = await monitor.tick();
    expect(report.ended.map((e) => e.sessionId)).toEqual(['a']);
    expect(report.totalMemoryMB).toBe(100);
    expect(pool.pressure).toBeNull();
  });
});
