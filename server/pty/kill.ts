import { closeSync, constants, openSync } from 'node:fs';
import { ProcessTable, readProc, sessionProcesses } from './processes';

/** The environment variable that tags every process a session starts. */
export const SESSION_TAG_ENV = 'AGENTD_SESSION_TAG';

/**
 * Grace periods of the close escalation (as GoTTY's --close-timeout): SIGHUP is
 * what a terminal closing sends and what agents save their state on; TERM for
 * those that ignore HUP; KILL for the rest.
 */
export const HUP_GRACE_MS = 1_000;
export const TERM_GRACE_MS = 2_000;
const KILL_WAIT_MS = 3_000;
const POLL_MS = 25;

export interface KillTarget {
  rootPid: number | null;
  tag: string;
  /**
   * The session's terminal (`/dev/pts/N`): processes that left the tree and
   * dropped the tag still hold it as their stdin, stdout or stderr. Give it
   * only while the session's pty holds it (PtyProcess.ttyPath), so the
   * number is this session's; absent or null (after a daemon restart, or once
   * the pty let go): the tree and the tag only.
   */
  tty?: string | null;
}

export interface KillReport {
  /** Every pid that was signalled. */
  pids: number[];
  /** The last signal that was needed. */
  escalatedTo: 'none' | 'SIGHUP' | 'SIGTERM' | 'SIGKILL';
  /** Pids still alive at the end (should be empty). */
  survivors: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A process we signalled, identified by pid and start time so a reused pid is never hit. */
interface Known {
  pid: number;
  startTime: number;
}

function alive(k: Known): boolean {
  const info = readProc(k.pid);
  return !!info && info.state !== 'Z' && info.startTime === k.startTime;
}

function collect(target: KillTarget, tty: string | null, known: Map<number, Known>): Known[] {
  const table = new ProcessTable();
  for (const pid of sessionProcesses(table, target.rootPid, SESSION_TAG_ENV, target.tag, tty)) {
    const info = table.byPid.get(pid)!;
    const prev = known.get(pid);
    if (!prev || prev.startTime !== info.startTime) known.set(pid, { pid, startTime: info.startTime });
  }
  return [...known.values()].filter(alive);
}

/**
 * Opens the session's terminal for the length of the escalation. While one
 * descriptor on it is open the kernel cannot give its number to a new
 * terminal, so every pass's scan finds this session's processes only — also
 * after the agent's death closed the master, mid-escalation, and the pty let
 * go of it. Null if it cannot be opened: then it is not scanned.
 */
function holdTerminal(path: string | null | undefined): number | null {
  if (!path) return null;
  try {
    // O_NOCTTY: the daemon must never acquire a session's terminal as its own.
    return openSync(path, constants.O_RDONLY | constants.O_NOCTTY);
  } catch {
    // Its master already closed (EIO) or its node is gone (ENOENT): the number may not be ours any more.
    return null;
  }
}

function signalAll(list: Known[], signal: NodeJS.Signals): void {
  for (const k of list) {
    try {
      process.kill(k.pid, signal);
    } catch {
      // Exited between the look-up and the signal: that is what we want.
    }
  }
}

/**
 * Ends every process of a session — its tree, every process carrying its tag
 * (those that left the tree by setsid, double fork or nohup) and every process
 * holding its terminal (those that also cleared their environment) — with
 * SIGHUP, then SIGTERM, then SIGKILL, each after a grace period. Resolves once
 * they are all gone. Processes forked during the escalation are caught by the
 * tag or the terminal on the next poll.
 */
export async function killSessionProcesses(target: KillTarget, hupGraceMs = HUP_GRACE_MS, termGraceMs = TERM_GRACE_MS): Promise<KillReport> {
  const hold = holdTerminal(target.tty);
  try {
    return await escalate(target, hold === null ? null : (target.tty ?? null), hupGraceMs, termGraceMs);
  } finally {
    if (hold !== null) closeSync(hold);
  }
}

async function escalate(target: KillTarget, tty: string | null, hupGraceMs: number, termGraceMs: number): Promise<KillReport> {
  const known = new Map<number, Known>();
  const steps: Array<['SIGHUP' | 'SIGTERM' | 'SIGKILL', number]> = [
    ['SIGHUP', hupGraceMs],
    ['SIGTERM', termGraceMs],
    ['SIGKILL', KILL_WAIT_MS],
  ];
  let escalatedTo: KillReport['escalatedTo'] = 'none';
  let living = collect(target, tty, known);
  for (const [signal, grace] of steps) {
    if (living.length === 0) break;
    escalatedTo = signal;
    const signalled = new Set<string>();
    const send = (list: Known[]) => {
      const fresh = list.filter((k) => !signalled.has(`${k.pid}:${k.startTime}`));
      for (const k of fresh) signalled.add(`${k.pid}:${k.startTime}`);
      signalAll(fresh, signal);
    };
    send(living);
    const deadline = Date.now() + grace;
    while (Date.now() < deadline) {
      await sleep(POLL_MS);
      living = collect(target, tty, known);
      if (living.length === 0) break;
      // Newcomers (forked after the signal) get the current signal too.
      send(living);
    }
  }
  return { pids: [...known.keys()], escalatedTo, survivors: living.map((k) => k.pid) };
}
