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

/** One process's reading in this call (shared by the targets that include it). */
interface Reading {
  usage: ProcUsage;
  memoryBytes: number;
}

/** A process of a session as a call found it: its CPU total then, and its parent (to see who reaped it). */
type Member = Pick<ProcUsage, 'startTime' | 'ppid' | 'cpuTicks'>;

/** A session's processes at the last call, for the CPU rate since. */
interface SessionMark {
  /** /proc/uptime then, seconds: the time base of start times. */
  uptime: number;
  /** Keyed by pid; a member only counts as the same process with the same start time. */
  members: Map<number, Member>;
}

/**
 * Samples the memory and CPU of every session's processes: one /proc pass per
 * call (ProcessTable) finds each session's tree and the processes that left it
 * but carry its tag, then each of those processes' /proc/<pid>/stat is read.
 *
 * CPU is a session's rate since the previous call, from the sum of its
 * processes' totals (/proc utime + stime + cutime + cstime, zombies included).
 * A child's CPU moves into its parent's cutime when it is reaped, so the sum
 * carries on across short-lived commands: a shell loop of them that used a
 * whole core read 14–19 % when only the processes alive at each call counted.
 * What leaves the session otherwise is taken out of the previous sum: a
 * process gone with no surviving ancestor in the session (reaped by init, or
 * the root reaped by the daemon) takes its last total with it, and a process
 * that was already running when it joined the session counts from the next
 * interval on. A session seen for the first time reports each
 * process's average since it started. Readings are keyed by pid *and* start
 * time, so a reused pid starts afresh. Calls must not overlap (the monitor's
 * ticks never do).
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
  private marks = new Map<string, SessionMark>();
  private units: Promise<SystemUnits> | null = null;
  private disposed = false;

  constructor(private readonly tagName: string = SESSION_TAG_ENV) {}

  async sample(targets: ProcessTarget[]): Promise<Map<string, ResourceSample>> {
    const out = new Map<string, ResourceSample>();
    if (this.disposed || targets.length === 0) {
      this.marks.clear();
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
    const readings = new Map<number, Reading | null>();
    const marks = new Map<string, SessionMark>();
    for (let i = 0; i < targets.length; i++) {
      if (i > 0 && i % TARGETS_PER_SLICE === 0) await yieldToLoop();
      const target = targets[i];
      const sample: ResourceSample = { memoryBytes: 0, cpuPercent: 0, pids: [] };
      const members = new Map<number, Member>();
      for (const pid of sessionPids(table, tagged, holders, target)) {
        if (!readings.has(pid)) readings.set(pid, this.read(pid, units));
        const reading = readings.get(pid);
        if (!reading) continue; // gone between the listing and the read
        const { usage } = reading;
        members.set(pid, usage);
        // A zombie holds no memory and is no process to end; its CPU is still in the sum until it is reaped.
        if (usage.state === 'Z') continue;
        sample.memoryBytes += reading.memoryBytes;
        sample.pids.push(pid);
      }
      if (!sample.pids.length) continue;
      sample.cpuPercent = cpuPercentOf(members, this.marks.get(target.sessionId), uptime, units.clockTicks);
      out.set(target.sessionId, sample);
      marks.set(target.sessionId, { uptime, members });
    }
    // Only sessions measured now are remembered: the map never outgrows the targets.
    if (!this.disposed) this.marks = marks;
    return out;
  }

  private read(pid: number, units: SystemUnits): Reading | null {
    const usage = readProcUsage(pid);
    return usage ? { usage, memoryBytes: usage.state === 'Z' ? 0 : usage.rssPages * units.pageSize } : null;
  }

  dispose(): void {
    this.disposed = true;
    this.marks.clear();
  }
}

/** A session's CPU rate, percent of one core, from its members now and at the last call (see the class comment). */
function cpuPercentOf(now: Map<number, Member>, last: SessionMark | undefined, uptime: number, clockTicks: number): number {
  const ageOf = (m: Member) => uptime - m.startTime / clockTicks;
  if (!last) {
    // First sight of the session: each process's average since it started.
    let percent = 0;
    for (const m of now.values()) if (ageOf(m) > 0) percent += (m.cpuTicks / clockTicks / ageOf(m)) * 100;
    return percent;
  }
  const seconds = uptime - last.uptime;
  if (seconds <= 0) return 0;
  const same = (pid: number, m: Member | undefined) => !!m && now.get(pid)?.startTime === m.startTime;
  let nowTicks = 0;
  let lastTicks = 0;
  for (const [pid, m] of now) {
    nowTicks += m.cpuTicks;
    const before = last.members.get(pid);
    if (same(pid, before)) lastTicks += before!.cpuTicks;
    // Joined while running (found by its tag or terminal only now): its past, and its children's, is not this
    // interval's; it counts from here on. (A lifetime average instead charged a joiner whose children had burnt
    // before it joined, 165 % for a process that then slept.)
    else if (ageOf(m) > seconds) lastTicks += m.cpuTicks;
  }
  for (const [pid, m] of last.members) {
    if (same(pid, m)) continue;
    // Gone: its total went up to the nearest ancestor that is still here (counted in nowTicks), or out of the session.
    if (!survivingAncestor(m, last.members, now)) continue;
    lastTicks += m.cpuTicks;
  }
  return Math.max(0, ((nowTicks - lastTicks) / clockTicks / seconds) * 100);
}

/** Whether a process that is gone was reaped within the session: some ancestor of it, through others gone too, is still here. */
function survivingAncestor(gone: Member, last: Map<number, Member>, now: Map<number, Member>): boolean {
  let ppid = gone.ppid;
  for (let hops = 0; hops < 64 && ppid > 1; hops++) {
    if (now.has(ppid)) return true;
    const parent = last.get(ppid);
    if (!parent) return false;
    ppid = parent.ppid;
  }
  return false;
}

/**
 * A session's processes: its tree, every process carrying its tag or holding
 * its terminal, and their descendants, without duplicates. The descendants of
 * a tagged process that left the tree count too: children it started without
 * the tag, and its zombies (whose environment reads empty), whose CPU lands in
 * its total when it reaps them and must have been counted before.
 */
function sessionPids(table: ProcessTable, tagged: Map<string, number[]>, holders: Map<string, number[]>, target: ProcessTarget): Set<number> {
  const pids = new Set<number>();
  const roots = [...(tagged.get(target.tag) ?? []), ...(target.tty ? (holders.get(target.tty) ?? []) : [])];
  if (target.rootPid) roots.push(target.rootPid);
  for (const root of roots) {
    if (pids.has(root)) continue; // already found as someone's descendant: so are its own
    for (const pid of table.descendants(root)) pids.add(pid);
  }
  return pids;
}
