import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Who holds a data directory: a pid and its /proc start time, to tell a reused pid apart. */
export interface LockHolder {
  pid: number;
  /** Clock ticks since boot (field 22 of /proc/<pid>/stat); null where /proc is missing. */
  startTime: number | null;
}

export const LOCK_FILE = 'agentd.lock';

/** Stale locks can be raced for by several starting daemons; a few rounds settle it. */
const ACQUIRE_ATTEMPTS = 5;

/**
 * An exclusive claim on a data directory, so that two daemons never write one
 * database. The lock file is created whole and atomically (written aside,
 * then hard-linked into place, which fails if it exists), holds the owner's
 * pid and start time, and is replaced when that process is gone, since a
 * SIGKILLed daemon cannot remove it.
 */
export class DataDirLock {
  private released = false;

  private constructor(
    readonly file: string,
    private readonly content: string,
  ) {}

  /** Takes the lock, or throws naming the live daemon that holds it. */
  static acquire(dataDir: string): DataDirLock {
    const file = path.join(dataDir, LOCK_FILE);
    const me: LockHolder = { pid: process.pid, startTime: procStartTime(process.pid) };
    const content = JSON.stringify(me);
    for (let attempt = 0; attempt < ACQUIRE_ATTEMPTS; attempt++) {
      if (createExclusive(file, content)) return new DataDirLock(file, content);
      const raw = readOrNull(file);
      if (raw === null) continue; // released between our attempt and the read: try again
      const holder = parseHolder(raw);
      if (holder && isAlive(holder)) {
        throw new Error(`another agentd (pid ${holder.pid}) is using DATA_DIR ${dataDir}; stop it or choose another data directory (lock file ${file})`);
      }
      removeStale(file, raw);
    }
    throw new Error(`could not take the lock on DATA_DIR ${dataDir} after ${ACQUIRE_ATTEMPTS} attempts: other processes keep racing for ${file}`);
  }

  /** Removes the lock file if it is still ours. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (readOrNull(this.file) === this.content) {
      try {
        unlinkSync(this.file);
      } catch {
        // Already gone: nothing to release.
      }
    }
  }
}

/** Creates `file` with `content` only if it does not exist; false if it does. */
function createExclusive(file: string, content: string): boolean {
  const aside = `${file}.${process.pid}.tmp`;
  writeFileSync(aside, content, { mode: 0o600 });
  try {
    linkSync(aside, file);
    return true;
  } catch (err) {
    if (errCode(err) === 'EEXIST') return false;
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes(errCode(err) ?? '')) throw err;
    // A filesystem without hard links: O_EXCL create, at the cost of a brief window where the file is empty.
    try {
      writeFileSync(file, content, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err2) {
      if (errCode(err2) === 'EEXIST') return false;
      throw err2;
    }
  } finally {
    try {
      unlinkSync(aside);
    } catch {
      // Nothing to clean up.
    }
  }
}

/**
 * Moves a dead holder's lock out of the way. Renaming is atomic, so when two
 * daemons race only one moves it; if what we moved turns out to be a fresh
 * lock (someone replaced the stale one meanwhile), it is linked back.
 */
function removeStale(file: string, staleContent: string): void {
  const moved = `${file}.stale-${process.pid}-${Date.now()}`;
  try {
    renameSync(file, moved);
  } catch {
    return; // someone else moved it first; the next attempt looks again
  }
  if (readOrNull(moved) !== staleContent) {
    try {
      linkSync(moved, file);
    } catch {
      // Yet another lock is in place; it will be checked on the next attempt.
    }
  }
  try {
    unlinkSync(moved);
  } catch {
    // Already gone.
  }
}

/** The live daemon holding `dataDir`'s lock, or null if none does (no lock, or its holder is gone). */
export function liveLockHolder(dataDir: string): LockHolder | null {
  const raw = readOrNull(path.join(dataDir, LOCK_FILE));
  const holder = raw === null ? null : parseHolder(raw);
  return holder && isAlive(holder) ? holder : null;
}

function parseHolder(raw: string): LockHolder | null {
  try {
    const value = JSON.parse(raw) as Partial<LockHolder>;
    if (typeof value.pid !== 'number' || !Number.isInteger(value.pid) || value.pid <= 0) return null;
    return { pid: value.pid, startTime: typeof value.startTime === 'number' ? value.startTime : null };
  } catch {
    return null; // unreadable: written by no agentd we know, treated as stale
  }
}

/** True if the holder's process still runs and is the same process (not a reused pid, not a zombie). */
export function isAlive(holder: LockHolder): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if (errCode(err) !== 'EPERM') return false; // ESRCH: no such process
  }
  const stat = readProcStat(holder.pid);
  if (stat === null) return true; // no /proc here: trust kill(0)
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return holder.startTime === null || stat.startTime === holder.startTime;
}

export function procStartTime(pid: number): number | null {
  return readProcStat(pid)?.startTime ?? null;
}

function readProcStat(pid: number): { state: string; startTime: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], startTime: Number(rest[19]) };
  } catch {
    return null;
  }
}

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
