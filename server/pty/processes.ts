import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** One process as /proc shows it. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  /** Start time in clock ticks since boot: with the pid, identifies a process across pid reuse. */
  startTime: number;
}

export function readProc(pid: number): ProcInfo | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      pid,
      state: rest[0],
      ppid: Number(rest[1]),
      pgid: Number(rest[2]),
      startTime: Number(rest[19]),
    };
  } catch {
    return null;
  }
}

export function listPids(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (Number.isInteger(pid) && pid > 0) pids.push(pid);
  }
  return pids;
}

/** A snapshot of every process, with a lazily read environment tag. */
export class ProcessTable {
  readonly byPid = new Map<number, ProcInfo>();
  private readonly children = new Map<number, number[]>();

  constructor() {
    for (const pid of listPids()) {
      const info = readProc(pid);
      if (!info) continue;
      this.byPid.set(pid, info);
      const siblings = this.children.get(info.ppid);
      if (siblings) siblings.push(pid);
      else this.children.set(info.ppid, [pid]);
    }
  }

  descendants(root: number): number[] {
    const out: number[] = [];
    const stack = [root];
    while (stack.length) {
      const pid = stack.pop()!;
      if (!this.byPid.has(pid)) continue;
      out.push(pid);
      for (const child of this.children.get(pid) ?? []) stack.push(child);
    }
    return out;
  }

  /** Every process whose environment carries `name=value` (those that left the tree too). */
  tagged(name: string, value: string): number[] {
    const needle = Buffer.from(`\0${name}=${value}\0`);
    const out: number[] = [];
    for (const pid of this.byPid.keys()) {
      if (environContains(pid, needle)) out.push(pid);
    }
    return out;
  }

  /**
   * Every process with a descriptor open on the terminal `ttyPath` (those that
   * left the tree and cleared their environment too) — also once its master
   * closed, when the link reads "<path> (deleted)". This process is left out:
   * the daemon holds its sessions' terminals itself.
   */
  holding(ttyPath: string): number[] {
    return this.holdingAll(new Set([ttyPath])).get(ttyPath) ?? [];
  }

  /**
   * For each of `ttyPaths`, the processes holding it, in one pass over /proc
   * (for the health monitor); `pids` limits the pass to some processes (about
   * 40 us each), so a caller can spread it over several turns of the loop.
   */
  holdingAll(ttyPaths: ReadonlySet<string>, pids: Iterable<number> = this.byPid.keys(), out = new Map<string, number[]>()): Map<string, number[]> {
    if (ttyPaths.size === 0) return out;
    for (const pid of pids) {
      if (pid === process.pid) continue;
      for (const path of heldPaths(pid, ttyPaths)) {
        const list = out.get(path);
        if (list) list.push(pid);
        else out.set(path, [pid]);
      }
    }
    return out;
  }

  /** Groups tagged processes by tag value, in one pass over /proc (for the health monitor). */
  taggedAll(name: string): Map<string, number[]> {
    const prefix = Buffer.from(`${name}=`);
    const out = new Map<string, number[]>();
    for (const pid of this.byPid.keys()) {
      const value = environValue(pid, prefix);
      if (value === null) continue;
      const list = out.get(value);
      if (list) list.push(pid);
      else out.set(value, [pid]);
    }
    return out;
  }
}

/** Which of `paths` process `pid` has a descriptor open on ("<path> (deleted)" counts as the path). */
function heldPaths(pid: number, paths: ReadonlySet<string>): Set<string> {
  const held = new Set<string>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    // Gone, or not ours to read (EACCES: another user's, or a set-uid program):
    // skipped; one started in the session is still found by its tree or tag.
    return held;
  }
  for (const fd of fds) {
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      // Closed, or the process exited, between the listing and the read: it holds nothing there.
      continue;
    }
    const path = link.endsWith(' (deleted)') ? link.slice(0, -' (deleted)'.length) : link;
    if (paths.has(path)) held.add(path);
  }
  return held;
}

function readEnviron(pid: number): Buffer | null {
  try {
    return readFileSync(`/proc/${pid}/environ`);
  } catch {
    // Gone, or not ours to read: such a process is not one of our sessions'.
    return null;
  }
}

function environContains(pid: number, needle: Buffer): boolean {
  const env = readEnviron(pid);
  if (!env || env.length === 0) return false;
  // Prefix a NUL so the first variable matches like the others.
  return Buffer.concat([Buffer.from([0]), env, Buffer.from([0])]).includes(needle);
}

function environValue(pid: number, prefix: Buffer): string | null {
  const env = readEnviron(pid);
  if (!env) return null;
  let start = 0;
  while (start < env.length) {
    let end = env.indexOf(0, start);
    if (end < 0) end = env.length;
    if (end - start > prefix.length && env.compare(prefix, 0, prefix.length, start, start + prefix.length) === 0) {
      return env.toString('utf8', start + prefix.length, end);
    }
    start = end + 1;
  }
  return null;
}

/**
 * The processes of one session: its tree, everything tagged with its tag and,
 * given its terminal, everything holding that terminal open.
 */
export function sessionProcesses(table: ProcessTable, rootPid: number | null, tagName: string, tag: string, ttyPath: string | null = null): number[] {
  const set = new Set<number>(table.tagged(tagName, tag));
  if (rootPid) for (const pid of table.descendants(rootPid)) set.add(pid);
  if (ttyPath) for (const pid of table.holding(ttyPath)) set.add(pid);
  // Zombies hold no memory and cannot be signalled away; their parent reaps them.
  return [...set].filter((pid) => table.byPid.get(pid)?.state !== 'Z');
}

/** True if `pid` is alive and is still the process that started at `startTime`. */
export function isSameProcess(pid: number, startTime: number): boolean {
  const info = readProc(pid);
  return !!info && info.state !== 'Z' && info.startTime === startTime;
}
