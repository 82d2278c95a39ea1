import Database from 'better-sqlite3';
import { join } from 'node:path';

/** Rows of a query on the store's database file, read-only, beside whatever connection the store holds. */
export function onDisk<T>(dataDir: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(join(dataDir, 'agentd.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/** PRAGMA integrity_check of the store's database file ("ok" when sound). */
export function integrity(dataDir: string): string {
  return onDisk<{ integrity_check: string }>(dataDir, 'PRAGMA integrity_check').map((r) => r.integrity_check).join('\n');
}
