import { IDisposable } from '../common/disposable';
import { SESSION_TAG_ENV } from '../pty/kill';
import { ProcessTable } from '../pty/processes';
import { ProcUsage, querySystemUnits, readProcUsage, readUptimeSeconds, SystemUnits } from './procStat';
import { ProcessTarget, ResourceSample, ResourceSampler } from './types';

/** Targets measured between two turns of the event loop (about 3 ms of reads for light trees). */
const TARGETS_PER_SLICE = 250;
/** Processes whose descriptors are read per turn of the loop when looking for sessions' terminals: ~8 ms. */
const PIDS_PER_SLICE = 200;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Where a process's CPU time stood when last read, to turn the next reading into a rate. */
interface CpuMark {
  startTime: number;
  ppid: number;
  /** Its own and its reaped children's (ProcUsage.cpuTicks). */
  cpuTicks: number;
  /** performance.now() of the reading. */
  at: number;
  /** What this reading measured (reused when two targets share a pid). */
  memoryBytes: number;
  cpuPercent: number;
}

/**
 * Samples the memory and CPU of every session's processes: one /proc pass per
 * call (ProcessTable) finds each session's tree and the processes that left it
 * but carry its tag, then each of those processes' /proc/<pid>/stat is read.
 *
 * CPU is the rate since the previous call, per process, its reaped children's
 * CPU included; a process seen for the first time reports its average since
 * it started. Children reaped by a process of the session between two calls
 * are only seen in their parent's total: that is how a shell loop's
 * short-lived commands count (a `while :; do /bin/true; done` measured 14–19 %
 * of a core without them, ~100 % with). A child that was itself sampled before
 * it was reaped would count twice, so what it had when last seen is taken off. Readings are keyed by pid
 * *and* start time, so a reused pid starts afresh. Calls must not overlap
 * (the monitor's ticks never do): each one moves the marks on.
 *
 * Why not pidusage, the stack's first choice: it keeps an open fd on each
 * pid's stat file, keyed by pid alone, and refreshes that entry on every call.
 * Once a sampled process dies and its pid is reused (pid_max is 32768 here and
 * agents run builds that fork thousands of processes), every later call for
 * that pid fails with ESRCH on the stale fd, so the new process is invisible
 * to the memory limit for as long as we keep asking (reproduced by forcing
 * the pid through /proc/sys/kernel/ns_last_pid; the integration test puts this
 * sampler through the same case). Its history also expires after 60 s, which
 * zeroes CPU at intervals over a minute, and its `clear()` drops the fds
 * without closing them. Reading /proc/<pid>/stat by hand costs about the same
 * (10 ms against 9 to 12 ms for 1000 processes, bench/health.ts) and has none
 * of that.
 */
export class ProcResourceSampler implements ResourceSampler, IDisposable {
  private marks = new Map<number, CpuMark>();
  /** Each session's processes at the last call: those gone since were reaped, maybe by one of its own. */
  private lastPids = new Map<string, number[]>();
  private units: Promise<SystemUnits> | null = null;
  private disposed = false;

  constructor(private readonly tagName: string = SESSION_TAG_ENV) {}

  async sample(targets: ProcessTarget[]): Promise<Map<string, ResourceSample>> {
    const out = new Map<string, ResourceSample>();
    if (this.disposed || targets.length === 0) {
      this.marks.clear();
      this.lastPids.clear();
      return out;
    }
    const units = await (this.units ??= querySystemUnits());
    // The walk is synchronous (about 20 ms for the stat files and 16 ms for the
    // environments of 1100 processes): give the event loop a turn between its
    // parts and between slices of targets, so output and keystrokes wait less.
    const table = new ProcessTable();
    await yieldToLoop();
    const tagged = table.taggedAll(this.tagName);
    await yieldToLoop();
    const ttys = new Set(targets.flatMap((t) => (t.tty ? [t.tty] : [])));
    const holders = new Map<string, number[]>();
    if (ttys.size) {
      // Every process's descriptors are read (~40 us a process): in slices, with the loop's turn between them.
      const pids = [...table.byPid.keys()];
      for (let i = 0; i < pids.length; i += PIDS_PER_SLICE) {
        table.holdingAll(ttys, pids.slice(i, i + PIDS_PER_SLICE), holders);
        await yieldToLoop();
      }
    }
    const uptime = readUptimeSeconds();
    const next = new Map<number, CpuMark>();
    const lastPids = new Map<string, number[]>();
    for (let i = 0; i < targets.length; i++) {
      if (i > 0 && i % TARGETS_PER_SLICE === 0) await yieldToLoop();
      const target = targets[i];
      const sample = this.measureTarget(sessionPids(table, tagged, holders, target), units, uptime, next);
      if (!sample) continue;
      sample.cpuPercent = Math.max(0, sample.cpuPercent - this.countedBeforeReaping(target.sessionId, sample.pids, units));
      out.set(target.sessionId, sample);
      lastPids.set(target.sessionId, sample.pids);
    }
    // Only processes alive now are remembered: the map never outgrows the process table.
    if (!this.disposed) {
      this.marks = next;
      this.lastPids = lastPids;
    }
    return out;
  }

  /**
   * The CPU rate to take off a session's sum: processes sampled last time that
   * are gone now and whose parent is still one of the session's have been
   * reaped by it, and their whole total (what was counted then included) has
   * just landed in the parent's.
   */
  private countedBeforeReaping(sessionId: string, pids: number[], units: SystemUnits): number {
    const before = this.lastPids.get(sessionId);
    if (!before) return 0;
    const now = new Set(pids);
    const at = performance.now();
    let percent = 0;
    for (const pid of before) {
      const mark = this.marks.get(pid);
      if (!mark || now.has(pid) || !now.has(mark.ppid)) continue;
      const wallSeconds = (at - mark.at) / 1000;
      if (wallSeconds > 0) percent += (mark.cpuTicks / units.clockTicks / wallSeconds) * 100;
    }
    return percent;
  }

  private measureTarget(pids: Iterable<number>, units: SystemUnits, uptime: number, next: Map<number, CpuMark>): ResourceSample | null {
    const sample: ResourceSample = { memoryBytes: 0, cpuPercent: 0, pids: [] };
    for (const pid of pids) {
      const mark = next.get(pid) ?? this.measure(pid, units, uptime);
      if (!mark) continue;
      next.set(pid, mark);
      sample.memoryBytes += mark.memoryBytes;
      sample.cpuPercent += mark.cpuPercent;
      sample.pids.push(pid);
    }
    return sample.pids.length ? sample : null;
  }

  private measure(pid: number, units: SystemUnits, uptime: number): CpuMark | null {
    const usage = readProcUsage(pid);
    // Gone between the listing and the read, or a zombie (no memory; its parent reaps it).
    if (!usage || usage.state === 'Z') return null;
    const at = performance.now();
    return {
      startTime: usage.startTime,
      ppid: usage.ppid,
      cpuTicks: usage.cpuTicks,
      at,
      memoryBytes: usage.rssPages * units.pageSize,
      cpuPercent: this.cpuPercent(usage, at, units, uptime),
    };
  }

  private cpuPercent(usage: ProcUsage, at: number, units: SystemUnits, uptime: number): number {
    const prev = this.marks.get(usage.pid);
    let cpuSeconds: number;
    let wallSeconds: number;
    if (prev && prev.startTime === usage.startTime) {
      cpuSeconds = (usage.cpuTicks - prev.cpuTicks) / units.clockTicks;
      wallSeconds = (at - prev.at) / 1000;
    } else {
      // First sight of this process (or of this pid's new owner): its average since it started.
      cpuSeconds = usage.cpuTicks / units.clockTicks;
      wallSeconds = uptime - usage.startTime / units.clockTicks;
    }
    return wallSeconds > 0 ? Math.max(0, (cpuSeconds / wallSeconds) * 100) : 0;
  }

  dispose(): void {
    this.disposed = true;
    this.marks.clear();
    this.lastPids.clear();
  }
}

/** A session's processes: its tree, every process carrying its tag and every one holding its terminal, without duplicates. */
function sessionPids(table: ProcessTable, tagged: Map<string, number[]>, holders: Map<string, number[]>, target: ProcessTarget): Set<number> {
  const pids = new Set<number>(tagged.get(target.tag) ?? []);
  if (target.tty) for (const pid of holders.get(target.tty) ?? []) pids.add(pid);
  if (target.rootPid) for (const pid of table.descendants(target.rootPid)) pids.add(pid);
  return pids;
}
