import { Clock, iso, wallTimeOf } from '../common/clock';
import { Disposable, toDisposable } from '../common/disposable';
import type { Logger } from '../common/log';
import type { Config } from '../config/schema';
import { ProcResourceSampler } from './ResourceSampler';
import { EndState, MonitoredPool, MonitoredSession, ProcessTarget, ResourceSample, ResourceSampler } from './types';

/** The settings the monitor reads (a whole Config will do). */
export type HealthConfig = Pick<
  Config,
  | 'sessionTimeoutHours'
  | 'sessionWarningHours'
  | 'idleTimeoutHours'
  | 'maxMemoryPerSessionMB'
  | 'maxTotalMemoryGB'
  | 'cpuUsageLimitPercent'
  | 'cpuSustainSeconds'
  | 'healthCheckIntervalSeconds'
>;

export interface HealthMonitorDeps {
  clock: Clock;
  pool: MonitoredPool;
  logger: Logger;
  /** Defaults to a ProcResourceSampler that the monitor owns and disposes. An injected one stays the caller's. */
  sampler?: ResourceSampler;
}

export interface MemoryFigures {
  usedMB: number;
  maxMB: number;
}

/** What one tick saw and did. */
export interface TickReport {
  /** Wall-clock ms when the tick began. */
  at: number;
  /** Real time the tick took, sampling included. */
  durationMs: number;
  /** True when the previous tick was still running: this one did nothing. */
  skipped: boolean;
  /** Live sessions looked at. */
  sessions: number;
  /** Sessions the sampler found processes for. */
  sampled: number;
  /** RSS of all live sessions' trees, MiB; null when sampling failed or was not reached. */
  totalMemoryMB: number | null;
  /** The pressure as set on the pool after this tick. */
  memoryPressure: MemoryFigures | null;
  warned: string[];
  ended: Array<{ sessionId: string; state: EndState; reason: string }>;
  /** Exceptions caught (one session's, the sampler's, the pool's); each is logged. */
  errors: number;
}

const HOUR_MS = 3_600_000;
const MiB = 2 ** 20;

/** The monitor's memory of one session between ticks. */
interface Watch {
  /** lifetimeStart() for which we sent the warning, so it goes out once even if the session is slow to say so. */
  warnedFor: number | null;
  /** Monotonic ms since which CPU has been over the limit without a break, or null. */
  cpuOverSince: number | null;
  /** Monotonic ms of the last sample: the start of the window the next sample's CPU rate covers. */
  lastSampleAt: number | null;
}

const round1 = (n: number) => Math.round(n * 10) / 10;

/**
 * Watches every live session on a timer: lifetime warning and expiry, idle
 * culling, and the memory and CPU of each session's process tree, plus the
 * total memory of all of them. It decides; the session acts (warn, end).
 * All ages are on the monotonic clock, so a wall-clock jump changes nothing.
 */
export class HealthMonitor extends Disposable {
  private readonly log: Logger;
  private readonly sampler: ResourceSampler;
  private readonly watches = new Map<string, Watch>();
  /** Sessions whose end() is under way: not looked at again until it settles. */
  private readonly ending = new Set<string>();
  private pressure: MemoryFigures | null = null;
  private noVictimLogged = false;
  private running = false;
  private started = false;
  private _lastTick: { at: number; durationMs: number } | null = null;
  private _totalMemoryMB: number | null = null;

  constructor(
    private readonly config: HealthConfig,
    private readonly deps: HealthMonitorDeps,
  ) {
    super();
    this.log = deps.logger.child({ component: 'health' });
    this.sampler = deps.sampler ?? this.register(new ProcResourceSampler());
  }

  /** When the last completed tick began (wall ms) and how long it took; for GET /api/health. */
  get lastTick(): { at: number; durationMs: number } | null {
    return this._lastTick;
  }

  /** Total RSS of all sessions at the last tick (null before the first sample) and the limit; for /api/sessions/active. */
  get memory(): { usedMB: number | null; maxMB: number } {
    return { usedMB: this._totalMemoryMB, maxMB: this.config.maxTotalMemoryGB * 1024 };
  }

  /** Ticks every HEALTH_CHECK_INTERVAL_SECONDS until disposed. A tick still running makes the next one a no-op. */
  start(): void {
    if (this.started || this.store.isDisposed) return;
    this.started = true;
    const handle = setInterval(() => void this.tick(), this.config.healthCheckIntervalSeconds * 1000);
    // The HTTP server keeps the daemon alive; the monitor alone should not keep a test or a CLI running.
    handle.unref();
    this.register(toDisposable(() => clearInterval(handle)));
  }

  /** One pass over every live session. Never rejects; never runs twice at once. */
  async tick(): Promise<TickReport> {
    const report = emptyReport(this.deps.clock.now(), this.pressure);
    if (this.running || this.store.isDisposed) {
      report.skipped = true;
      this.log.debug({ reason: this.running ? 'previous tick still running' : 'disposed' }, 'health tick skipped');
      return report;
    }
    this.running = true;
    const started = performance.now();
    try {
      await this.runTick(report);
    } catch (err) {
      // Not expected (each step catches its own), but a tick must never take the timer down.
      report.errors++;
      this.log.error({ err }, 'health tick failed');
    } finally {
      this.running = false;
      report.durationMs = performance.now() - started;
      report.memoryPressure = this.pressure;
      if (!this.store.isDisposed) this._lastTick = { at: report.at, durationMs: report.durationMs };
      this.log.debug(
        { sessions: report.sessions, sampled: report.sampled, totalMemoryMB: report.totalMemoryMB, ended: report.ended.length, warned: report.warned.length, errors: report.errors, durationMs: round1(report.durationMs) },
        'health tick',
      );
    }
    return report;
  }

  private async runTick(report: TickReport): Promise<void> {
    const now = this.deps.clock.monotonic();
    const live = this.liveSessions(report);
    report.sessions = live.length;
    this.forgetGone(live);
    const survivors = live.filter((s) => !this.guarded(report, s, false, () => this.checkLifetime(s, now, report) || this.checkIdle(s, now, report)));
    await this.checkResources(survivors, report);
  }

  private liveSessions(report: TickReport): MonitoredSession[] {
    let all: MonitoredSession[];
    try {
      all = this.deps.pool.monitoredSessions();
    } catch (err) {
      report.errors++;
      this.log.error({ err }, 'could not list sessions');
      return [];
    }
    return all.filter((s) => !this.ending.has(s.id) && this.guarded(report, s, false, () => s.isLive()));
  }

  /** Drops what we remember of sessions that are no longer live. */
  private forgetGone(live: MonitoredSession[]): void {
    const ids = new Set(live.map((s) => s.id));
    for (const id of this.watches.keys()) if (!ids.has(id)) this.watches.delete(id);
  }

  private watch(id: string): Watch {
    let w = this.watches.get(id);
    if (!w) this.watches.set(id, (w = { warnedFor: null, cpuOverSince: null, lastSampleAt: null }));
    return w;
  }

  /** Runs one session's rule; an exception is logged and counted, and the other sessions go on. */
  private guarded<T>(report: TickReport, session: MonitoredSession, fallback: T, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      report.errors++;
      this.log.error({ err, sessionId: session.id }, 'health rule failed for session');
      return fallback;
    }
  }

  // ---- lifetime and idleness -------------------------------------------------

  /** Returns true if the session was ended. */
  private checkLifetime(s: MonitoredSession, now: number, report: TickReport): boolean {
    const start = s.lifetimeStart();
    const { sessionTimeoutHours: limitHours, sessionWarningHours } = this.config;
    const deadline = start + limitHours * HOUR_MS;
    const ageHours = round1000((now - start) / HOUR_MS);
    if (now >= deadline) {
      this.end(s, 'expired', `lifetime: ${limitHours}h reached`, report, 'info', { ageHours, limitHours });
      return true;
    }
    const w = this.watch(s.id);
    if (now >= start + sessionWarningHours * HOUR_MS && !s.isWarned() && w.warnedFor !== start) {
      const expiresAt = wallTimeOf(this.deps.clock, deadline);
      // If warn() throws, nothing is recorded and the next tick tries again.
      s.warn(expiresAt);
      w.warnedFor = start;
      report.warned.push(s.id);
      this.log.info({ sessionId: s.id, ageHours, warningHours: sessionWarningHours, limitHours, expiresAt: iso(expiresAt) }, 'session lifetime warning');
    }
    return false;
  }

  private checkIdle(s: MonitoredSession, now: number, report: TickReport): boolean {
    const limitHours = this.config.idleTimeoutHours;
    if (!(limitHours > 0) || s.clientCount() > 0 || s.isBusy()) return false;
    const idleMs = now - s.lastActivity();
    if (idleMs < limitHours * HOUR_MS) return false;
    // The contract's endReason for a cull is exactly "idle".
    this.end(s, 'expired', 'idle', report, 'info', { idleHours: round1000(idleMs / HOUR_MS), limitHours });
    return true;
  }

  // ---- resources --------------------------------------------------------------

  private async checkResources(sessions: MonitoredSession[], report: TickReport): Promise<void> {
    const targets = new Map<string, ProcessTarget>();
    for (const s of sessions) {
      const target = this.guarded(report, s, null, () => s.processTarget());
      if (target) targets.set(s.id, target);
    }
    let samples: Map<string, ResourceSample>;
    try {
      samples = await this.sampler.sample([...targets.values()]);
    } catch (err) {
      // Without figures we neither record nor judge: the last sample stands, and the next tick tries again.
      report.errors++;
      this.log.error({ err, sessions: targets.size }, 'resource sampling failed');
      return;
    }
    if (this.store.isDisposed) return;
    report.sampled = samples.size;
    const sampledAt = this.deps.clock.monotonic();
    let totalBytes = 0;
    const holders: MonitoredSession[] = [];
    for (const s of sessions) {
      if (this.ending.has(s.id) || !this.guarded(report, s, false, () => s.isLive())) continue;
      const sample = targets.has(s.id) ? (samples.get(s.id) ?? null) : null;
      // Apart from the limits: a session that fails to record its figures is still held to them.
      this.guarded(report, s, undefined, () => s.recordUsage(sample));
      const kept = this.guarded(report, s, 0, () => this.checkUsage(s, sample, sampledAt, report));
      totalBytes += kept;
      if (kept > 0) holders.push(s);
    }
    report.totalMemoryMB = this._totalMemoryMB = round1(totalBytes / MiB);
    this.checkTotalMemory(totalBytes / MiB, holders, report);
  }

  /** Applies the per-session limits. Returns the bytes the session keeps holding (0 if ended). */
  private checkUsage(s: MonitoredSession, sample: ResourceSample | null, now: number, report: TickReport): number {
    const w = this.watch(s.id);
    const windowStart = w.lastSampleAt ?? now;
    w.lastSampleAt = now;
    if (!sample) {
      w.cpuOverSince = null;
      return 0;
    }
    const memoryMB = sample.memoryBytes / MiB;
    const limitMB = this.config.maxMemoryPerSessionMB;
    if (memoryMB > limitMB) {
      const shown = round1(memoryMB);
      this.end(s, 'killed', `memory_limit: ${shown} MB > ${limitMB} MB`, report, 'warn', { memoryMB: shown, limitMB, pids: sample.pids.length });
      return 0;
    }
    return this.checkCpu(s, w, sample, windowStart, now, report) ? 0 : sample.memoryBytes;
  }

  /**
   * CPU over the limit without a break for longer than CPU_SUSTAIN_SECONDS ends
   * the session. A sample is the average rate since the previous one, so an
   * over-limit run starts at the beginning of the first over-limit window, not
   * at the tick that saw it: with 30 s ticks and 60 s of sustain, the third
   * over-limit sample in a row ends it, after 90 s of measured overuse.
   */
  private checkCpu(s: MonitoredSession, w: Watch, sample: ResourceSample, windowStart: number, now: number, report: TickReport): boolean {
    const limitPercent = this.config.cpuUsageLimitPercent;
    if (sample.cpuPercent <= limitPercent) {
      w.cpuOverSince = null;
      return false;
    }
    w.cpuOverSince ??= windowStart;
    const overMs = now - w.cpuOverSince;
    const sustainSeconds = this.config.cpuSustainSeconds;
    if (overMs <= sustainSeconds * 1000) return false;
    const cpuPercent = round1(sample.cpuPercent);
    const overSeconds = Math.round(overMs / 1000);
    this.end(s, 'killed', `cpu_limit: ${cpuPercent}% > ${limitPercent}% for ${overSeconds} s`, report, 'warn', { cpuPercent, limitPercent, overSeconds, sustainSeconds });
    return true;
  }

  /**
   * Over MAX_TOTAL_MEMORY_GB, new sessions are refused (pool pressure); still
   * over on the next tick, the least recently active session that holds memory,
   * is not busy and has no client is ended. A victim is out of the count from
   * the next tick on, so at most one is ended per tick.
   */
  private checkTotalMemory(usedMB: number, holders: MonitoredSession[], report: TickReport): void {
    const maxMB = this.config.maxTotalMemoryGB * 1024;
    const figures = { usedMB: round1(usedMB), maxMB };
    if (usedMB > maxMB) {
      if (this.pressure) this.endMemoryVictim(holders, figures, report);
      else this.log.warn(figures, 'memory pressure: new sessions refused');
      this.setPressure(figures, report);
    } else if (this.pressure) {
      this.noVictimLogged = false;
      this.log.info(figures, 'memory pressure cleared');
      this.setPressure(null, report);
    }
  }

  private endMemoryVictim(holders: MonitoredSession[], figures: MemoryFigures, report: TickReport): void {
    let victim: { s: MonitoredSession; lastActivity: number } | null = null;
    for (const s of holders) {
      const lastActivity = this.guarded(report, s, null, () => (s.clientCount() === 0 && !s.isBusy() ? s.lastActivity() : null));
      if (lastActivity !== null && (!victim || lastActivity < victim.lastActivity)) victim = { s, lastActivity };
    }
    if (!victim) {
      // Once per episode: at a 1 s interval a line per tick would bury everything else.
      if (!this.noVictimLogged) this.log.warn({ ...figures, sessions: holders.length }, 'memory pressure: no idle session without clients to end');
      this.noVictimLogged = true;
      return;
    }
    this.noVictimLogged = false;
    const idleSeconds = Math.round((this.deps.clock.monotonic() - victim.lastActivity) / 1000);
    this.end(victim.s, 'killed', 'total_memory_limit', report, 'warn', { ...figures, idleSeconds });
  }

  private setPressure(pressure: MemoryFigures | null, report: TickReport): void {
    this.pressure = pressure;
    try {
      this.deps.pool.setMemoryPressure(pressure);
    } catch (err) {
      report.errors++;
      this.log.error({ err }, 'could not set memory pressure on the pool');
    }
  }

  // ---- acting -----------------------------------------------------------------

  /** Ends a session: one log line with the figures, then end() in the background. */
  private end(s: MonitoredSession, state: EndState, reason: string, report: TickReport, level: 'info' | 'warn', figures: Record<string, unknown>): void {
    const id = s.id;
    this.ending.add(id);
    this.watches.delete(id);
    report.ended.push({ sessionId: id, state, reason });
    this.log[level]({ sessionId: id, state, reason, ...figures }, state === 'killed' ? 'session killed' : 'session expired');
    // Not awaited: ending a tree can take seconds of grace periods, and the tick must not wait on it.
    let ended: Promise<void>;
    try {
      ended = Promise.resolve(s.end(state, reason));
    } catch (err) {
      ended = Promise.reject(err);
    }
    ended
      .catch((err) => this.log.error({ err, sessionId: id, state, reason }, 'ending session failed'))
      .finally(() => this.ending.delete(id));
  }
}

function emptyReport(at: number, pressure: MemoryFigures | null): TickReport {
  return { at, durationMs: 0, skipped: false, sessions: 0, sampled: 0, totalMemoryMB: null, memoryPressure: pressure, warned: [], ended: [], errors: 0 };
}

function round1000(n: number): number {
  return Math.round(n * 1000) / 1000;
}
