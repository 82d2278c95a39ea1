import { chmodSync, closeSync, existsSync, openSync, renameSync } from 'node:fs';
import Database from 'better-sqlite3';
import { migrate, type Migration } from './migrate';

export const DB_FILE = 'agentd.db';

/** What happened when the database at open was found unreadable. */
export interface Recovery {
  /** Where the damaged file went (its -wal and -shm beside it, same name plus suffix). */
  movedTo: string;
  /** What showed the damage: SQLite's error, or the first line of `quick_check`. */
  reason: string;
}

export interface DatabaseSettings {
  busyTimeoutMs: number;
}

/** SQLite's answer when the file is not a database or its pages do not hold together. */
class CorruptDatabaseError extends Error {}

/** The damaged database was moved aside; a fresh one can be opened in its place. */
class MovedAside extends Error {
  constructor(readonly movedTo: string, readonly reason: string) {
    super(`damaged database moved to ${movedTo}: ${reason}`);
  }
}

const CORRUPTION_CODES = new Set(['SQLITE_NOTADB', 'SQLITE_CORRUPT', 'SQLITE_CORRUPT_INDEX', 'SQLITE_CORRUPT_SEQUENCE', 'SQLITE_CORRUPT_VTAB']);

/**
 * Opens (creating if needed) the database, checks it, and brings its schema
 * up to date. A damaged file is moved aside, never deleted, with its -wal and
 * -shm (SQLite would otherwise replay the old WAL into the new file), and a
 * fresh database is started; the caller learns it from `recovered`.
 */
export function openDatabase(
  file: string,
  migrations: readonly Migration[],
  settings: DatabaseSettings,
): { db: Database.Database; recovered?: Recovery } {
  try {
    return { db: openChecked(file, migrations, settings) };
  } catch (err) {
    if (!(err instanceof MovedAside)) throw err;
    return { db: openChecked(file, migrations, settings), recovered: { movedTo: err.movedTo, reason: err.reason } };
  }
}

function openChecked(file: string, migrations: readonly Migration[], settings: DatabaseSettings): Database.Database {
  ownerOnly(file);
  const db = new Database(file);
  try {
    // The first statement reads the header: a file that is not a database fails here.
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(settings.busyTimeoutMs))}`);
    db.pragma('journal_mode = WAL');
    // quick_check reads every page but skips index-to-table matching: O(N), a fraction of integrity_check.
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new CorruptDatabaseError(`quick_check: ${String(check)}`);
    // In WAL mode NORMAL survives a crash of the daemon and risks only the last commits on power loss;
    // FULL costs about 5x per commit (research/perf-limits.md section 6).
    db.pragma('synchronous = NORMAL');
    // The WAL is reused after each checkpoint; this cuts it back when a burst made it large.
    db.pragma('journal_size_limit = 67108864');
    migrate(db, migrations);
    return db;
  } catch (err) {
    // Moved while still open: closing the last connection deletes the -wal and -shm by name,
    // and the WAL of a damaged database may hold the newest data.
    const moved = isCorruption(err) ? new MovedAside(moveAside(file), (err as Error).message) : null;
    db.close();
    throw moved ?? err;
  }
}

/**
 * The database holds every session's terminal output: readable by its owner
 * only, even in a DATA_DIR that others can read. SQLite gives the -wal and
 * -shm the database file's mode when it creates them; existing ones are set here.
 */
function ownerOnly(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch {
      // No -wal or -shm yet: SQLite creates them with the database's mode.
    }
  }
}

function isCorruption(err: unknown): boolean {
  if (err instanceof CorruptDatabaseError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && CORRUPTION_CODES.has(code);
}

/** Renames `file` and its -wal/-shm to `file.corrupt-<timestamp>[-wal|-shm]`; returns the new name. */
function moveAside(file: string): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  let target = `${file}.corrupt-${stamp}`;
  for (let n = 2; existsSync(target); n++) target = `${file}.corrupt-${stamp}-${n}`;
  renameSync(file, target);
  for (const suffix of ['-wal', '-shm']) {
    if (existsSync(file + suffix)) renameSync(file + suffix, target + suffix);
  }
  return target;
}
