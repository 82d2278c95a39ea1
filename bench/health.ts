/**
 * What one health tick costs: N fake sessions, each pointing at a real light
 * process (`sleep 1000`, tagged like a session's), the real sampler and the
 * real monitor rules. Prints the median tick, its CPU, the monitor's share of
 * a core at a 30 s and a 1 s interval, and the longest the event loop was held.
 *
 *   npx tsc -p . && node dist/bench/health.js [sizes…]     (default sizes: 100 1000)
 */
import { ChildProcess, spawn } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pidusage from 'pidusage';
import { systemClock } from '../server/common/clock';
import { silentLogger } from '../server/common/log';
import { HealthConfig, HealthMonitor } from '../server/health/HealthMonitor';
import { ProcResourceSampler } from '../server/health/ResourceSampler';
import type { EndState, MonitoredPool, MonitoredSession, ProcessTarget, ResourceSample } from '../server/health/types';
import { SESSION_TAG_ENV } from '../server/pty/kill';
import { listPids, ProcessTable } from '../server/pty/processes';

const WARMUP_TICKS = 2;
const MEASURED_TICKS = 7;

export interface HealthBenchRow {
  sessions: number;
  /** Processes in /proc during the run (the walk reads every one). */
  systemProcesses: number;
  /** One monitor tick: sampler + rules. */
  tickMs: { median: number; min: number; max: number };
  /** Of which: the ProcessTable walk with tags, synchronous. */
  walkMs: number;
  /** The sampler alone (walk + stat reads). */
  samplerMs: number;
  /** The monitor's rules alone (sampler answering from memory). */
  rulesMs: number;
  /** For comparison: pidusage on the same pids, the stack's first choice. */
  pidusageMs: number;
  /** process.cpuUsage() (user + system) per tick. */
  cpuMsPerTick: number;
  cpuPercentOfCoreAt30s: number;
  cpuPercentOfCoreAt1s: number;
  /** Longest event-loop delay seen during the measured ticks. */
  maxEventLoopBlockMs: number;
}

class BenchSession implements MonitoredSession {
  private readonly born = systemClock.monotonic();
  constructor(
    readonly id: string,
    private readonly target: ProcessTarget,
  ) {}
  isLive(): boolean {
    return true;
  }
  lifetimeStart(): number {
    return this.born;
  }
  isWarned(): boolean {
    return false;
  }
  isBusy(): boolean {
    return false;
  }
  clientCount(): number {
    return 0;
  }
  lastActivity(): number {
    return this.born;
  }
  processTarget(): ProcessTarget {
    return this.target;
  }
  warn(): void {}
  end(_state: EndState, reason: string): Promise<void> {
    throw new Error(`bench session ended unexpectedly: ${reason}`);
  }
  recordUsage(_sample: ResourceSample | null): void {}
}

/** Limits no sleeping process reaches: every rule runs, none fires. */
const config: HealthConfig = {
  sessionTimeoutHours: 24,
  sessionWarningHours: 20,
  idleTimeoutHours: 24,
  maxMemoryPerSessionMB: 500,
  maxTotalMemoryGB: 64,
  cpuUsageLimitPercent: 80,
  cpuSustainSeconds: 60,
  healthCheckIntervalSeconds: 30,
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round2 = (n: number) => Math.round(n * 100) / 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function startSleepers(n: number, tagPrefix: string): Promise<{ children: ChildProcess[]; targets: ProcessTarget[] }> {
  const children: ChildProcess[] = [];
  const targets: ProcessTarget[] = [];
  for (let i = 0; i < n; i++) {
    const tag = `${tagPrefix}${i}`;
    const child = spawn('sleep', ['1000'], { stdio: 'ignore', env: { ...process.env, [SESSION_TAG_ENV]: tag } });
    children.push(child);
    // A terminal nothing holds: the sampler still reads every process's descriptors looking for it, as for a live session.
    targets.push({ sessionId: `s${i}`, rootPid: child.pid!, tag, tty: `/dev/pts/agentd-bench-${i}` });
  }
  // Spawned is not yet exec'd: wait until every one shows its tag.
  for (let tries = 0; ; tries++) {
    const tagged = new ProcessTable().taggedAll(SESSION_TAG_ENV);
    const ready = targets.filter((t) => tagged.has(t.tag)).length;
    if (ready === n) break;
    if (tries > 200) throw new Error(`only ${ready} of ${n} sleepers started`);
    await sleep(50);
  }
  return { children, targets };
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  const exits = children.filter((c) => c.exitCode === null && c.signalCode === null).map((c) => new Promise((r) => c.once('exit', r)));
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await Promise.all(exits);
}

async function timed<T>(fn: () => Promise<T> | T): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function measure(n: number): Promise<HealthBenchRow> {
  const { children, targets } = await startSleepers(n, `bench-health-${process.pid}-`);
  const sampler = new ProcResourceSampler();
  const sessions = targets.map((t) => new BenchSession(t.sessionId, t));
  const pool: MonitoredPool = { monitoredSessions: () => sessions, setMemoryPressure: () => {} };
  const monitor = new HealthMonitor(config, { clock: systemClock, pool, sampler, logger: silentLogger() });
  try {
    for (let i = 0; i < WARMUP_TICKS; i++) await monitor.tick();
    const ticks: number[] = [];
    const cpu: number[] = [];
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    for (let i = 0; i < MEASURED_TICKS; i++) {
      const before = process.cpuUsage();
      const report = await monitor.tick();
      const used = process.cpuUsage(before);
      if (report.sampled !== n || report.ended.length) throw new Error(`tick saw ${report.sampled} of ${n} sessions, ended ${report.ended.length}`);
      ticks.push(report.durationMs);
      cpu.push((used.user + used.system) / 1000);
      await sleep(20); // let the delay histogram see the loop free between ticks
    }
    loop.disable();
    const walk: number[] = [];
    const sample: number[] = [];
    const pu: number[] = [];
    const pids = targets.map((t) => t.rootPid!);
    await pidusage(pids); // its first call reads every pid twice and spawns getconf
    for (let i = 0; i < MEASURED_TICKS; i++) {
      walk.push(await timed(() => new ProcessTable().taggedAll(SESSION_TAG_ENV)));
      sample.push(await timed(() => sampler.sample(targets)));
      pu.push(await timed(() => pidusage(pids)));
    }
    const canned = await sampler.sample(targets);
    const rulesOnly = new HealthMonitor(config, { clock: systemClock, pool, sampler: { sample: async () => canned }, logger: silentLogger() });
    const rules: number[] = [];
    for (let i = 0; i < WARMUP_TICKS + MEASURED_TICKS; i++) rules.push((await rulesOnly.tick()).durationMs);
    rulesOnly.dispose();
    const cpuMsPerTick = median(cpu);
    return {
      sessions: n,
      systemProcesses: listPids().length,
      tickMs: { median: round2(median(ticks)), min: round2(Math.min(...ticks)), max: round2(Math.max(...ticks)) },
      walkMs: round2(median(walk)),
      samplerMs: round2(median(sample)),
      rulesMs: round2(median(rules.slice(WARMUP_TICKS))),
      pidusageMs: round2(median(pu)),
      cpuMsPerTick: round2(cpuMsPerTick),
      cpuPercentOfCoreAt30s: round2((cpuMsPerTick / 30_000) * 100),
      cpuPercentOfCoreAt1s: round2((cpuMsPerTick / 1_000) * 100),
      maxEventLoopBlockMs: round2(loop.max / 1e6),
    };
  } finally {
    monitor.dispose();
    sampler.dispose();
    pidusage.clear();
    await stopAll(children);
  }
}

export async function run(sizes: number[] = [100, 1000]): Promise<HealthBenchRow[]> {
  const rows: HealthBenchRow[] = [];
  for (const n of sizes) rows.push(await measure(n));
  return rows;
}

if (require.main === module) {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  run(sizes.length ? sizes : undefined)
    .then((rows) => {
      console.table(
        rows.map((r) => ({
          sessions: r.sessions,
          procs: r.systemProcesses,
          'tick p50 ms': r.tickMs.median,
          'tick min..max': `${r.tickMs.min}..${r.tickMs.max}`,
          'walk ms': r.walkMs,
          'sampler ms': r.samplerMs,
          'rules ms': r.rulesMs,
          'pidusage ms': r.pidusageMs,
          'cpu ms/tick': r.cpuMsPerTick,
          '% core @30s': r.cpuPercentOfCoreAt30s,
          '% core @1s': r.cpuPercentOfCoreAt1s,
          'max loop block ms': r.maxEventLoopBlockMs,
        })),
      );
      console.log(JSON.stringify(rows));
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
