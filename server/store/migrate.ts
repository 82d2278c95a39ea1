import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';

/** One numbered schema step, `NNN_name.sql`, applied once in order. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_FILE = /^(\d+)_[\w-]+\.sql$/;

/**
 * Where the numbered .sql files are. From ts-jest the code runs in
 * server/store/ and they sit beside it; compiled code runs in
 * dist/server/store/ and tsc does not copy .sql files, so walk up to the
 * checkout's server/store/migrations.
 */
export function findMigrationsDir(fromDir: string = __dirname): string {
  const beside = path.join(fromDir, 'migrations');
  if (existsSync(beside)) return beside;
  for (let dir = path.dirname(fromDir); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'server', 'store', 'migrations');
    if (existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) break;
  }
  throw new Error(`cannot find the store's migrations folder (looked beside ${fromDir} and above it for server/store/migrations)`);
}

/** Reads the migrations of `dir`, checking they are numbered 1, 2, 3… without gaps. */
export function readMigrations(dir: string): Migration[] {
  const migrations = readdirSync(dir)
    .map((file) => ({ file, match: MIGRATION_FILE.exec(file) }))
    .filter((f): f is { file: string; match: RegExpExecArray } => f.match !== null)
    .map(({ file, match }) => ({ version: Number(match[1]), name: file, sql: readFileSync(path.join(dir, file), 'utf8') }))
    .sort((a, b) => a.version - b.version);
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migrations in ${dir} must be numbered 1, 2, 3… without gaps; found ${m.name} at position ${i + 1}`);
  });
  if (migrations.length === 0) throw new Error(`no migrations found in ${dir}`);
  return migrations;
}

/**
 * Brings the schema to the newest version, one transaction per step; the
 * step and its `user_version` commit together, so a crash never leaves a
 * half-applied step. Returns the version reached.
 */
export function migrate(db: Database.Database, migrations: readonly Migration[]): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  const latest = migrations.length;
  if (current > latest) {
    throw new Error(`the database has schema version ${current}, newer than this agentd knows (${latest}); run a newer agentd or point DATA_DIR elsewhere`);
  }
  for (const m of migrations.filter((m) => m.version > current)) {
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
  return latest;
}
