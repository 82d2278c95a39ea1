import { ManualClock } from '../../../server/common/clock';
import { createLogger, Logger } from '../../../server/common/log';
import { HealthConfig, HealthMonitor } from '../../../server/health/HealthMonitor';
import type { EndState, MonitoredPool, MonitoredSession, ProcessTarget, ResourceSample, ResourceSampler } from '../../../server/health/types';

export const HOUR = 3_600_000;
export const MiB = 2 ** 20;

export const baseConfig: HealthConfig = {
  sessionTimeoutHours: 24,
  sessionWarningHours: 20,
  idleTimeoutHours: 0,
  maxMemoryPerSessionMB: 500,
  maxTotalMemoryGB: 2,
  cpuUsageLimitPercent: 80,
  cpuSustainSeconds: 60,
  healthCheckIntervalSeconds: 30,
};

/** A session as the monitor sees it, driven by hand. */
export class FakeSession implements MonitoredSession {
  live = true;
  start: number;
  warned = false;
  busy = false;
  clients = 0;
  activity: number;
  target: ProcessTarget | null;
  readonly warnings: number[] = [];
  readonly ends: Array<{ state: EndState; reason: string }> = [];
  readonly usage: Array<ResourceSample | null> = [];
  /** Replaces end()'s behaviour (default: no longer live, resolves). */
  onEnd: ((state: EndState, reason: string) => Promise<void>) | null = null;

  constructor(readonly id: string, private readonly clock: ManualClock) {
    this.start = clock.monotonic();
    this.activity = clock.monotonic();
    this.target = { sessionId: id, rootPid: null, tag: `tag-${id}` };
  }

  isLive(): boolean {
    return this.live;
  }
  lifetimeStart(): number {
    return this.start;
  }
  isWarned(): boolean {
    return this.warned;
  }
  isBusy(): boolean {
    return this.busy;
  }
  clientCount(): number {
    return this.clients;
  }
  lastActivity(): number {
    return this.activity;
  }
  processTarget(): ProcessTarget | null {
    return this.target;
  }
  warn(expiresAtWallMs: number): void {
    this.warnings.push(expiresAtWallMs);
    this.warned = true;
  }
  end(state: EndState, reason: string): Promise<void> {
    this.ends.push({ state, reason });
    if (this.onEnd) return this.onEnd(state, reason);
    this.live = false;
    return Promise.resolve();
  }
  recordUsage(sample: ResourceSample | null): void {
    this.usage.push(sample);
  }

  /** What POST /api/sessions/keep-alive does to the lifetime. */
  keepAlive(): void {
    this.start = this.clock.monotonic();
    this.activity = this.clock.monotonic();
    this.warned = false;
  }
}

export class FakePool implements MonitoredPool {
  readonly sessions: FakeSession[] = [];
  readonly pressureCalls: Array<{ usedMB: number; maxMB: number } | null> = [];
  pressure: { usedMB: number; maxMB: number } | null = null;

  monitoredSessions(): MonitoredSession[] {
    return this.sessions;
  }
  setMemoryPressure(pressure: { usedMB: number; maxMB: number } | null): void {
    this.pressureCalls.push(pressure);
    this.pressure = pressure;
  }
}

/** Answers with whatever the test put in `usage` for each target's session. */
export class FakeSampler implements ResourceSampler {
  readonly usage = new Map<string, ResourceSample>();
  readonly calls: ProcessTarget[][] = [];
  /** When set, sample() waits for it (to hold a tick open). */
  gate: Promise<void> | null = null;
  fail: Error | null = null;

  async sample(targets: ProcessTarget[]): Promise<Map<string, ResourceSample>> {
    this.calls.push(targets);
    if (this.gate) await this.gate;
    if (this.fail) throw this.fail;
    const out = new Map<string, ResourceSample>();
    for (const t of targets) {
      const u = this.usage.get(t.sessionId);
      if (u) out.set(t.sessionId, u);
    }
    return out;
  }

  set(sessionId: string, memoryMB: number, cpuPercent = 0): void {
    this.usage.set(sessionId, { memoryBytes: memoryMB * MiB, cpuPercent, pids: [4242] });
  }
}

/** A pino logger whose lines land, parsed, in `lines`. */
export function captureLogger(level = 'debug'): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  // A plain { write } destination: pino calls it synchronously, so lines are there when the call returns.
  const sink = {
    write(chunk: string) {
      for (const line of chunk.split('\n')) if (line) lines.push(JSON.parse(line));
    },
  };
  return { logger: createLogger(level, sink), lines };
}

export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** A monitor on a ManualClock with fake pool, sampler and a capturing logger. */
export function makeMonitor(overrides: Partial<HealthConfig> = {}) {
  const clock = new ManualClock();
  const pool = new FakePool();
  const sampler = new FakeSampler();
  const { logger, lines } = captureLogger();
  const monitor = new HealthMonitor({ ...baseConfig, ...overrides }, { clock, pool, sampler, logger });
  const add = (id: string): FakeSession => {
    const session = new FakeSession(id, clock);
    pool.sessions.push(session);
    return session;
  };
  return { clock, pool, sampler, monitor, lines, add };
}
