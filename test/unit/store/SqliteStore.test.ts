import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { OutputKind } from '../../../server/store/codec';
import { findMigrationsDir, migrate, readMigrations } from '../../../server/store/migrate';
import { SqliteStore, type SqliteStoreOptions } from '../../../server/store/SqliteStore';
import type { SessionStore, StoreHealth } from '../../../server/store/SessionStore';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { onDisk } from '../../helpers/db';
import { describeStoreContract, record, turn } from './storeContract';

const dirs = new WeakMap<SessionStore, { dir: string; options: Partial<SqliteStoreOptions> }>();
function makeStore(options: Partial<SqliteStoreOptions> = {}, dir = tmpdir('store')): SqliteStore {
  const store = SqliteStore.open({ dataDir: dir, ...options });
  dirs.set(store, { dir, options });
  return store;
}
function reopen(store: SessionStore): SqliteStore {
  const { dir, options } = dirs.get(store) as { dir: string; options: Partial<SqliteStoreOptions> };
  store.close();
  return makeStore(options, dir);
}

afterAll(cleanupTmp);

for (const [state, settle] of [
  ['nothing flushed', (s: SessionStore) => s],
  ['flushed', (s: SessionStore) => (s.flush(), s)],
  ['reopened', reopen],
] as const) {
  describeStoreContract(`SqliteStore (${state})`, {
    make: ({ maxHistoryBytes }) => makeStore({ maxHistoryBytes, flushIntervalMs: 60_000 }),
    settle,
    dispose: (s) => s.close(),
  });
}

/** Rows of the database as another connection sees them: what is really on disk. */
/** The output rows of a session on disk, oldest first: start, end, kind, stored length. */
function rowsOf(dir: string, session: string): Array<{ s: number; e: number; c: number; n: number }> {
  return onDisk(dir, 'SELECT start_offset s, end_offset e, compressed c, length(data) n FROM output WHERE session_id = ? ORDER BY e', session);
}

function sqliteError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

describe('SqliteStore', () => {
  let store: SqliteStore | undefined;
  afterEach(() => {
    store?.close();
    store = undefined;
  });

  it('keeps the database, its -wal and -shm readable by the owner only, even in a folder others can read', () => {
    const dir = tmpdir('store-mode');
    chmodSync(dir, 0o755);
    // A -wal left world-readable by an older daemon is tightened too.
    writeFileSync(join(dir, 'agentd.db-wal'), '', { mode: 0o644 });
    chmodSync(join(dir, 'agentd.db-wal'), 0o644);
    store = makeStore({}, dir);
    store.putSession(record());
    store.flush();
    for (const f of ['agentd.db', 'agentd.db-wal', 'agentd.db-shm']) expect([f, statSync(join(dir, f)).mode & 0o777]).toEqual([f, 0o600]);
  });

  it('creates agentd.db in WAL mode with the newest schema', () => {
    const dir = tmpdir('store');
    store = makeStore({}, dir);
    expect(onDisk<{ journal_mode: string }>(dir, 'PRAGMA journal_mode')[0].journal_mode).toBe('wal');
    expect(onDisk<{ user_version: number }>(dir, 'PRAGMA user_version')[0].user_version).toBe(2);
    const tables = onDisk<{ name: string }>(dir, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map((t) => t.name);
    expect(tables).toEqual(['events', 'output', 'sessions', 'snapshots', 'turns']);
    expect(store.integrityCheck()).toBe('ok');
  });

  it('keeps output across reopen with exact bytes', () => {
    store = makeStore();
    const all = randomBytes(1_500_000);
    for (let offset = 0; offset < all.length; ) {
      const size = 1 + Math.floor(Math.random() * 9000);
      store.appendOutput('S1', offset, all.subarray(offset, offset + size));
      offset += size;
      if (Math.random() < 0.05) store.flush();
    }
    store = reopen(store);
    expect(store.outputRange('S1')).toEqual({ start: 0, end: all.length });
    expect(store.readOutput('S1', 0)?.data.equals(all)).toBe(true);
    expect(store.readOutput('S1', 777_777, 1_234_567)?.data.equals(all.subarray(777_777, 1_234_567))).toBe(true);
  });

  it('flushes a session\'s appends as brotli pieces of at most 256 KiB', () => {
    const dir = tmpdir('store');
    store = makeStore({ flushIntervalMs: 60_000 }, dir);
    const text = Buffer.from('\x1b[32m✓\x1b[0m test passes in 12 ms\r\n'.repeat(24000)).subarray(0, 800 * 1024);
    for (let offset = 0; offset < text.length; offset += 4096) store.appendOutput('S1', offset, text.subarray(offset, offset + 4096));
    store.flush();
    const rows = onDisk<{ s: number; e: number; c: number; n: number }>(
      dir, 'SELECT start_offset s, end_offset e, compressed c, length(data) n FROM output ORDER BY e');
    expect(rows.map((r) => [r.s, r.e])).toEqual([[0, 262144], [262144, 524288], [524288, 786432], [786432, 819200]]);
    expect(rows.every((r) => r.c === OutputKind.PIECE && r.n < (r.e - r.s) / 10)).toBe(true);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(text)).toBe(true);
  });

  it('stores incompressible output as is, and never reads it back to compact it', async () => {
    const dir = tmpdir('store');
    store = makeStore({ quietMs: 50, segmentBytes: 64 * 1024 }, dir);
    const random = randomBytes(300_000);
    store.appendOutput('S1', 0, random);
    store.flush();
    const stored = [
      { c: 0, n: 262_144 },
      { c: 0, n: 300_000 - 262_144 },
    ];
    expect(onDisk<{ c: number; n: number }>(dir, 'SELECT compressed c, length(data) n FROM output ORDER BY end_offset')).toEqual(stored);
    // A compressible sliver after it, then quiet: the sliver is compacted alone; the raw rows stay as they are.
    store.appendOutput('S1', 300_000, Buffer.from('$ '.repeat(100)));
    await new Promise((r) => setTimeout(r, 100));
    await store.compactionsSettled();
    expect(onDisk<{ c: number; n: number }>(dir, 'SELECT compressed c, length(data) n FROM output WHERE end_offset <= 300000 ORDER BY end_offset')).toEqual(stored);
    expect(store.readOutput('S1', 0)?.data.equals(Buffer.concat([random, Buffer.from('$ '.repeat(100))]))).toBe(true);
  });

  it('compacts a quiet session\'s slivers into one segment', async () => {
    const dir = tmpdir('store');
    store = makeStore({ flushIntervalMs: 60_000, quietMs: 200 }, dir);
    let expected = '';
    for (let i = 0; i < 50; i++) {
      const line = `\r\x1b[2K⠋ Thinking… (${i}s)`;
      store.appendOutput('S1', Buffer.byteLength(expected), Buffer.from(line));
      expected += line;
      expect(await store.flushAsync()).toBe(true);
    }
    expect(rowsOf(dir, 'S1')).toHaveLength(50);
    // Once quiet for quietMs, a round recompresses the tail; the one after swaps the segment in.
    await waitFor(async () => (await store?.flushAsync(), rowsOf(dir, 'S1').length === 1), 5000, 'the quiet tail to be compacted');
    expect(rowsOf(dir, 'S1')[0]).toMatchObject({ s: 0, e: Buffer.byteLength(expected), c: OutputKind.SEGMENT });
    expect(store.readOutput('S1', 0)?.data.toString()).toBe(expected);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.toString()).toBe(expected);
  });

  it('caps history by dropping oldest chunks', () => {
    const dir = tmpdir('store');
    store = makeStore({ maxHistoryBytes: 200_000 }, dir);
    const all = randomBytes(1_000_000);
    for (let offset = 0; offset < all.length; offset += 50_000) {
      store.appendOutput('S1', offset, all.subarray(offset, offset + 50_000));
      store.flush();
    }
    const rows = onDisk<{ s: number; e: number }>(dir, 'SELECT start_offset s, end_offset e FROM output ORDER BY e');
    expect(rows[0].s).toBe(store.outputRange('S1').start);
    expect(rows[rows.length - 1].e).toBe(1_000_000);
    expect(1_000_000 - rows[0].s).toBeGreaterThanOrEqual(200_000);
    expect(1_000_000 - rows[1].s).toBeLessThan(200_000); // the oldest kept chunk is needed to cover the cap
    store = reopen(store);
    expect(store.readOutput('S1', rows[0].s)?.data.equals(all.subarray(rows[0].s))).toBe(true);
  });

  it('flushes queued writes on its timer without being asked', async () => {
    const dir = tmpdir('store');
    store = makeStore({ flushIntervalMs: 30 }, dir);
    store.putSession(record());
    store.appendOutput('S1', 0, Buffer.from('tick'));
    await waitFor(() => onDisk(dir, 'SELECT 1 FROM output').length === 1, 5000, 'the timer flush');
    expect(onDisk<{ b: number }>(dir, 'SELECT output_bytes b FROM sessions')).toEqual([{ b: 4 }]);
  });

  it('flushes soon once a session has a full chunk queued, never inside appendOutput', async () => {
    const dir = tmpdir('store');
    store = makeStore({ flushIntervalMs: 60_000 }, dir);
    store.appendOutput('S1', 0, randomBytes(256 * 1024));
    expect(onDisk(dir, 'SELECT 1 FROM output')).toHaveLength(0);
    await new Promise((r) => setImmediate(r));
    await waitFor(() => onDisk(dir, 'SELECT 1 FROM output').length === 1, 5000, 'the size-triggered flush');
  });

  it('commits every session of a batch in one transaction, or none', () => {
    const dir = tmpdir('store');
    let transactions = 0;
    let fail = true;
    store = makeStore({ faultInjector: () => { transactions++; if (fail) throw sqliteError('SQLITE_IOERR_WRITE', 'disk I/O error'); } }, dir);
    for (let i = 0; i < 100; i++) {
      store.putSession(record({ id: `S${i}` }));
      store.appendOutput(`S${i}`, 0, Buffer.from(`output of ${i}`));
    }
    expect(store.flush()).toBe(false);
    expect(transactions).toBe(1);
    expect(onDisk(dir, 'SELECT 1 FROM sessions UNION ALL SELECT 1 FROM output')).toHaveLength(0);
    fail = false;
    expect(store.flush()).toBe(true);
    expect(transactions).toBe(2);
    expect(onDisk(dir, 'SELECT 1 FROM output')).toHaveLength(100);
    expect(onDisk(dir, 'SELECT 1 FROM sessions')).toHaveLength(100);
  });

  it('retries a batch after disk full and reports degraded', async () => {
    const dir = tmpdir('store');
    let diskFull = false;
    store = makeStore({ flushIntervalMs: 40, faultInjector: () => { if (diskFull) throw sqliteError('SQLITE_FULL', 'database or disk is full'); } }, dir);
    const changes: StoreHealth[] = [];
    store.onHealthChange((h) => changes.push(h));
    store.putSession(record());
    store.appendOutput('S1', 0, Buffer.from('before '));
    store.flush();
    diskFull = true;
    store.appendOutput('S1', 7, Buffer.from('during '));
    store.addEvent({ sessionId: 'S1', type: 'warned', at: 5, detail: { minutesLeft: 60 } });
    store.putTurn(turn());
    expect(store.flush()).toBe(false);
    const health = store.health();
    expect(health.status).toBe('degraded');
    expect(health.detail).toMatch(/^disk full \(SQLITE_FULL: database or disk is full\): 1 failed flush\(es\) since .*; 7 bytes of output and 2 other writes kept in memory, retried every 40 ms$/);
    // Nothing written is invisible while it waits.
    store.appendOutput('S1', 14, Buffer.from('more'));
    expect(store.readOutput('S1', 0)?.data.toString()).toBe('before during more');
    expect(store.listEvents('S1')).toHaveLength(1);
    expect(store.listTurns('S1')).toHaveLength(1);
    await waitFor(() => /[2-9] failed flush|\d\d failed flush/.test(store?.health().detail ?? ''), 5000, 'a retry on the tick');
    diskFull = false;
    await waitFor(() => store?.health().status === 'ok', 5000, 'recovery');
    expect(changes.map((h) => h.status)).toEqual(['degraded', 'ok']);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.toString()).toBe('before during more');
    expect(store.listEvents('S1')).toEqual([{ sessionId: 'S1', type: 'warned', at: 5, detail: { minutesLeft: 60 } }]);
    expect(store.listTurns('S1')).toEqual([turn()]);
    expect(store.integrityCheck()).toBe('ok');
  });

  it('reports a disk write error as degraded and bounds what it keeps by the history cap', () => {
    let failing = true;
    store = makeStore({ maxHistoryBytes: 100_000, faultInjector: () => { if (failing) throw sqliteError('SQLITE_IOERR_WRITE', 'disk I/O error'); } });
    for (let offset = 0; offset < 1_000_000; offset += 10_000) store.appendOutput('S1', offset, randomBytes(10_000));
    expect(store.flush()).toBe(false);
    expect(store.health()).toEqual({ status: 'degraded', detail: expect.stringMatching(/^disk write error \(SQLITE_IOERR_WRITE/) });
    expect(store.outputRange('S1')).toEqual({ start: 900_000, end: 1_000_000 });
    expect(store.health().detail).toContain('100000 bytes of output');
    failing = false;
    expect(store.flush()).toBe(true);
    expect(store.health()).toEqual({ status: 'ok' });
  });

  it('reports a database locked by another process as degraded, then recovers', () => {
    const dir = tmpdir('store');
    store = makeStore({ busyTimeoutMs: 50 }, dir);
    const other = new Database(join(dir, 'agentd.db'));
    other.exec('BEGIN EXCLUSIVE');
    try {
      store.appendOutput('S1', 0, Buffer.from('waiting'));
      expect(store.flush()).toBe(false);
      expect(store.health().detail).toMatch(/^database locked by another process \(SQLITE_BUSY/);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(store.flush()).toBe(true);
    expect(store.health()).toEqual({ status: 'ok' });
    expect(onDisk(dir, 'SELECT 1 FROM output')).toHaveLength(1);
  });

  it('moves a corrupt file aside and starts fresh', () => {
    const dir = tmpdir('store');
    const garbage = Buffer.concat([Buffer.from('this is not an SQLite database'), randomBytes(8192)]);
    writeFileSync(join(dir, 'agentd.db'), garbage);
    writeFileSync(join(dir, 'agentd.db-wal'), 'old wal');
    writeFileSync(join(dir, 'agentd.db-shm'), 'old shm');
    store = makeStore({}, dir);
    const movedTo = store.recovered?.movedTo as string;
    expect(movedTo).toMatch(/agentd\.db\.corrupt-\d{4}-\d\d-\d\dT[\d-]+Z$/);
    expect(store.recovered?.reason).toMatch(/not a database/);
    expect(readFileSync(movedTo).equals(garbage)).toBe(true);
    expect(readFileSync(`${movedTo}-wal`, 'utf8')).toBe('old wal');
    expect(existsSync(`${movedTo}-shm`)).toBe(true); // SQLite rebuilds this index of the WAL: its bytes carry no data
    store.putSession(record());
    store = reopen(store);
    expect(store.recovered).toBeUndefined();
    expect(store.getSession('S1')).toEqual(record());
    expect(store.integrityCheck()).toBe('ok');
  });

  it('moves aside a database whose pages fail quick_check', () => {
    const dir = tmpdir('store');
    store = makeStore({}, dir);
    for (let i = 0; i < 2000; i++) store.addEvent({ sessionId: `S${i % 10}`, type: 'attached', at: i, detail: { client: `c${i}` } });
    store.close();
    store = undefined;
    const file = join(dir, 'agentd.db');
    const bytes = readFileSync(file);
    const pageSize = bytes.readUInt16BE(16);
    // Scribble over the b-tree page headers past the schema page: the header still says SQLite.
    for (let page = 1; page < bytes.length / pageSize; page++) bytes.fill(0xa5, page * pageSize, page * pageSize + 12);
    writeFileSync(file, bytes);
    store = makeStore({}, dir);
    expect(store.recovered).toBeDefined();
    const moved = readdirSync(dir).filter((f) => /\.corrupt-[\dTZ-]+$/.test(f));
    expect(moved).toHaveLength(1);
    expect(statSync(join(dir, moved[0])).size).toBe(bytes.length);
    expect(store.listEvents('S1')).toEqual([]);
    expect(store.integrityCheck()).toBe('ok');
  });

  it('refuses a database written by a newer agentd and leaves it in place', () => {
    const dir = tmpdir('store');
    const db = new Database(join(dir, 'agentd.db'));
    db.pragma('user_version = 99');
    db.close();
    expect(() => makeStore({}, dir)).toThrow(/schema version 99, newer than this agentd knows \(2\)/);
    expect(readdirSync(dir).filter((f) => f.includes('corrupt'))).toEqual([]);
    expect(existsSync(join(dir, 'agentd.lock'))).toBe(false); // the lock taken for the attempt is released
  });

  it('refuses a second store on the same data dir', () => {
    const dir = tmpdir('store');
    store = makeStore({}, dir);
    expect(() => makeStore({}, dir)).toThrow(`another agentd (pid ${process.pid}) is using DATA_DIR ${dir}`);
    store.putSession(record());
    store.flush();
    expect(store.getSession('S1')).toBeDefined();
  });

  it('replaces a stale lock left by a dead process', () => {
    const dir = tmpdir('store');
    const dead = spawnSync('true').pid as number;
    writeFileSync(join(dir, 'agentd.lock'), JSON.stringify({ pid: dead, startTime: 1 }));
    store = makeStore({}, dir);
    expect(JSON.parse(readFileSync(join(dir, 'agentd.lock'), 'utf8')).pid).toBe(process.pid);
  });

  it('replaces a lock whose pid now belongs to another process', () => {
    const dir = tmpdir('store');
    // pid 1 is alive, but it did not start at this time: the pid was reused.
    writeFileSync(join(dir, 'agentd.lock'), JSON.stringify({ pid: 1, startTime: 123_456_789_012 }));
    store = makeStore({}, dir);
    expect(JSON.parse(readFileSync(join(dir, 'agentd.lock'), 'utf8')).pid).toBe(process.pid);
  });

  it('replaces an unreadable lock file', () => {
    const dir = tmpdir('store');
    writeFileSync(join(dir, 'agentd.lock'), '');
    store = makeStore({}, dir);
    expect(readdirSync(dir).filter((f) => f.startsWith('agentd.lock'))).toEqual(['agentd.lock']);
  });

  it('releases the data dir on close', () => {
    const dir = tmpdir('store');
    makeStore({}, dir).close();
    expect(existsSync(join(dir, 'agentd.lock'))).toBe(false);
    store = makeStore({}, dir);
  });

  it('leaves no timer or immediate behind after close', () => {
    const handles = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
    const before = handles();
    const s = makeStore({ faultInjector: () => { throw sqliteError('SQLITE_FULL', 'database or disk is full'); } });
    s.putSession(record());
    s.appendOutput('S1', 0, randomBytes(300_000)); // arms the tick and a size-triggered flush
    expect(handles()).toBeGreaterThan(before);
    s.close(); // its final flush fails too: it must still close and clear everything
    expect(handles()).toBe(before);
  });

  it('refuses writes after close but drops late output quietly', () => {
    const s = makeStore();
    s.close();
    expect(() => s.putSession(record())).toThrow(/is closed/);
    expect(() => s.appendOutput('S1', 0, Buffer.from('late'))).not.toThrow();
    expect(() => s.close()).not.toThrow();
  });

  it('prunes ended sessions with all their rows, then truncates the WAL', () => {
    const dir = tmpdir('store');
    store = makeStore({}, dir);
    for (const [id, endedAt] of [['live', null], ['recent', 9_000], ['old', 1_000], ['older', 500]] as const) {
      store.putSession(record({ id, endedAt }));
      store.appendOutput(id, 0, randomBytes(50_000));
      store.addEvent({ sessionId: id, type: 'created', at: 1, detail: null });
      store.putTurn(turn({ id: `turn-${id}`, sessionId: id }));
      store.putSnapshot({ sessionId: id, offset: 1, cols: 80, rows: 24, data: 'x', createdAt: 1 });
    }
    store.flush();
    expect(store.pruneEnded(5_000, 10_000)).toBe(2);
    expect(store.listSessions().map((s) => s.id).sort()).toEqual(['live', 'recent']);
    for (const table of ['output', 'events', 'turns', 'snapshots']) {
      expect(onDisk<{ id: string }>(dir, `SELECT DISTINCT session_id id FROM ${table} ORDER BY id`).map((r) => r.id)).toEqual(['live', 'recent']);
    }
    expect(statSync(join(dir, 'agentd.db-wal')).size).toBe(0);
    expect(store.integrityCheck()).toBe('ok');
  });

  it('sees queued deletes before they are flushed and applies puts made after them', () => {
    store = makeStore();
    store.putSession(record());
    store.appendOutput('S1', 0, Buffer.from('old life'));
    store.addEvent({ sessionId: 'S1', type: 'created', at: 1, detail: null });
    store.flush();
    store.deleteSession('S1');
    expect(store.getSession('S1')).toBeUndefined();
    expect(store.listEvents('S1')).toEqual([]);
    store.putSession(record({ agent: 'codex' }));
    store.appendOutput('S1', 0, Buffer.from('new'));
    store = reopen(store);
    expect(store.getSession('S1')?.agent).toBe('codex');
    expect(store.readOutput('S1', 0)?.data.toString()).toBe('new');
    expect(store.listEvents('S1')).toEqual([]);
  });

  it('rejects nonsense options with their name', () => {
    expect(() => makeStore({ maxHistoryBytes: 0 })).toThrow(/maxHistoryBytes must be a positive number/);
  });
});

describe('migrations', () => {
  it('finds the migrations folder beside the code and from compiled code under dist/', () => {
    expect(findMigrationsDir(join(__dirname, '../../../server/store'))).toBe(join(__dirname, '../../../server/store/migrations'));
    const root = tmpdir('layout');
    mkdirSync(join(root, 'server/store/migrations'), { recursive: true });
    mkdirSync(join(root, 'dist/server/store'), { recursive: true });
    expect(findMigrationsDir(join(root, 'dist/server/store'))).toBe(join(root, 'server/store/migrations'));
  });

  it('applies each migration once, in order, by user_version', () => {
    const dir = tmpdir('migrations');
    writeFileSync(join(dir, '001_first.sql'), 'CREATE TABLE a (x);');
    writeFileSync(join(dir, '002_second.sql'), 'CREATE TABLE b (y); INSERT INTO a VALUES (1);');
    writeFileSync(join(dir, 'README.md'), 'not a migration');
    const db = new Database(':memory:');
    expect(migrate(db, readMigrations(dir).slice(0, 1))).toBe(1);
    expect(migrate(db, readMigrations(dir))).toBe(2);
    expect(migrate(db, readMigrations(dir))).toBe(2);
    expect(db.prepare('SELECT count(*) n FROM a').get()).toEqual({ n: 1 });
    expect(db.pragma('user_version', { simple: true })).toBe(2);
    db.close();
  });

  it('rolls a failing migration back whole', () => {
    const dir = tmpdir('migrations');
    writeFileSync(join(dir, '001_first.sql'), 'CREATE TABLE a (x); CREATE TABLE a (x);');
    const db = new Database(':memory:');
    expect(() => migrate(db, readMigrations(dir))).toThrow(/already exists/);
    expect(db.pragma('user_version', { simple: true })).toBe(0);
    expect(db.prepare("SELECT count(*) n FROM sqlite_master WHERE name = 'a'").get()).toEqual({ n: 0 });
    db.close();
  });

  it('rejects migrations with a gap in their numbers', () => {
    const dir = tmpdir('migrations');
    writeFileSync(join(dir, '001_first.sql'), 'SELECT 1;');
    writeFileSync(join(dir, '003_third.sql'), 'SELECT 1;');
    expect(() => readMigrations(dir)).toThrow(/without gaps; found 003_third.sql at position 2/);
  });
});
