import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { agentLikeOutput } from '../../../bench/persist';
import { OutputKind, packOutput, DEFAULT_CODEC, unpackOutput } from '../../../server/store/codec';
import { findMigrationsDir, migrate, readMigrations } from '../../../server/store/migrate';
import { pickCompactionRun } from '../../../server/store/outputChunks';
import { SessionOutput } from '../../../server/store/SessionOutput';
import { SqliteStore, type SqliteStoreOptions } from '../../../server/store/SqliteStore';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { onDisk } from '../../helpers/db';

/**
 * The output path of the SQLite store as the daemon drives it: timed flushes
 * packed by the compression worker, synchronous flushes racing them,
 * background compaction into segments, and what each leaves on disk.
 */

const SEGMENT = 256 * 1024;

const opened = new Map<SqliteStore, { dir: string; options: Partial<SqliteStoreOptions> }>();
function makeStore(options: Partial<SqliteStoreOptions> = {}, dir = tmpdir('pipeline')): SqliteStore {
  const store = SqliteStore.open({ dataDir: dir, flushIntervalMs: 60_000, ...options });
  opened.set(store, { dir, options });
  return store;
}
function reopen(store: SqliteStore): SqliteStore {
  const { dir, options } = opened.get(store) as { dir: string; options: Partial<SqliteStoreOptions> };
  store.close();
  opened.delete(store);
  return makeStore(options, dir);
}

function rowsOf(dir: string, session = 'S1'): Array<{ s: number; e: number; c: number; n: number }> {
  return onDisk(dir, 'SELECT start_offset s, end_offset e, compressed c, length(data) n FROM output WHERE session_id = ? ORDER BY e', session);
}

/** Rows follow each other without a hole or an overlap. */
function expectContiguous(rows: Array<{ s: number; e: number }>): void {
  for (let i = 1; i < rows.length; i++) expect(rows[i].s).toBe(rows[i - 1].e);
}

/** Appends `data` at `offset` in 4 KiB reads, as a PTY delivers it. */
function stream(store: SqliteStore, id: string, offset: number, data: Buffer): void {
  for (let at = 0; at < data.length; at += 4096) store.appendOutput(id, offset + at, data.subarray(at, at + 4096));
}

/** Flushes the way the timer does until `done` holds. */
async function flushUntil(store: SqliteStore, done: () => boolean, what: string): Promise<void> {
  await waitFor(async () => (await store.flushAsync(), done()), 10_000, what);
}

afterEach(() => {
  for (const store of opened.keys()) store.close();
  opened.clear();
});
afterAll(cleanupTmp);

describe('codec', () => {
  it('keeps bytes that do not shrink raw, and refuses a kind it does not know', () => {
    const random = randomBytes(10_000);
    const packed = packOutput(random, OutputKind.PIECE, DEFAULT_CODEC);
    expect(packed.kind).toBe(OutputKind.RAW);
    expect(packed.data.equals(random)).toBe(true);
    const text = agentLikeOutput(50_000);
    for (const kind of [OutputKind.PIECE, OutputKind.SEGMENT] as const) {
      const row = packOutput(text, kind, DEFAULT_CODEC);
      expect(row.kind).toBe(kind);
      expect(unpackOutput(row.kind, row.data).equals(text)).toBe(true);
    }
    expect(unpackOutput(OutputKind.GZIP, gzipSync(text)).equals(text)).toBe(true);
    expect(() => unpackOutput(7, Buffer.alloc(1))).toThrow(/unknown kind 7/);
  });
});

describe('pickCompactionRun', () => {
  const K = 1024;
  const row = (start: number, end: number, compressed: number) => ({ start, end, compressed });
  const { RAW, PIECE } = OutputKind;

  it('takes the contiguous pieces up to maxBytes', () => {
    const rows = [row(0, 100 * K, PIECE), row(100 * K, 200 * K, PIECE), row(200 * K, 300 * K, PIECE)];
    expect(pickCompactionRun(rows, 0, 150 * K)).toEqual({ settledTo: 0, source: [[0, 100 * K, PIECE], [100 * K, 200 * K, PIECE]] });
  });

  it('skips large raw rows and the short runs between them, and leaves a short run after them for later', () => {
    const rows = [row(0, 256 * K, RAW), row(256 * K, 260 * K, PIECE), row(260 * K, 516 * K, RAW), row(516 * K, 520 * K, PIECE)];
    expect(pickCompactionRun(rows, 0, 4096 * K)).toEqual({ settledTo: 516 * K, source: [] });
  });

  it('compacts a long run that ends at a raw row, and small raw rows with their neighbours', () => {
    const rows = [row(0, 40 * K, PIECE), row(40 * K, 40 * K + 10, RAW), row(40 * K + 10, 80 * K, PIECE), row(80 * K, 336 * K, RAW)];
    expect(pickCompactionRun(rows, 0, 4096 * K)).toEqual({ settledTo: 0, source: [[0, 40 * K, PIECE], [40 * K, 40 * K + 10, RAW], [40 * K + 10, 80 * K, PIECE]] });
  });

  it('stops at a hole', () => {
    expect(pickCompactionRun([row(0, 10, PIECE), row(20, 30, PIECE)], 0, 4096 * K)).toEqual({ settledTo: 0, source: [[0, 10, PIECE]] });
  });
});

describe('SqliteStore output pipeline', () => {
  it('packs timed flushes in the worker, then recompresses the pieces into segments of 256-512 KiB', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({ quietMs: 600_000 }, dir); // only full segments, however slow the machine
    const history = agentLikeOutput(1_300_000, 5);
    for (let at = 0; at < history.length; at += 16 * 1024) {
      stream(store, 'S1', at, history.subarray(at, at + 16 * 1024));
      expect(await store.flushAsync()).toBe(true);
      // Every byte is readable at every moment, whichever of disk and memory holds it.
      if ((at / (16 * 1024)) % 10 === 0) expect(store.readOutput('S1', 0)?.data.equals(history.subarray(0, at + 16 * 1024))).toBe(true);
    }
    expect(store.packerName).toBe('worker');
    await store.compactionsSettled();
    const rows = rowsOf(dir);
    // At least (1.3 MB - one segment of pieces) / 512 KiB: how the runs fall depends on how fast the worker answers.
    expect(rows.filter((r) => r.c === OutputKind.SEGMENT).length).toBeGreaterThanOrEqual(3);
    expectContiguous(rows);
    expect(rows[0].s).toBe(0);
    expect(rows[rows.length - 1].e).toBe(history.length);
    const segments = rows.filter((r) => r.c === OutputKind.SEGMENT);
    for (const r of segments) {
      expect(r.e - r.s).toBeGreaterThanOrEqual(SEGMENT);
      expect(r.e - r.s).toBeLessThan(2 * SEGMENT);
    }
    // The point of it: agent-like output at 8:1 or better once compacted (pieces alone get ~5.4:1).
    const segmentRatio = segments.reduce((n, r) => n + r.e - r.s, 0) / segments.reduce((n, r) => n + r.n, 0);
    expect(segmentRatio).toBeGreaterThan(8.5);
    // Less than a segment of the newest output is still pieces.
    expect(rows.filter((r) => r.c !== OutputKind.SEGMENT).reduce((n, r) => n + r.e - r.s, 0)).toBeLessThan(SEGMENT);
    expect(store.readOutput('S1', 0)?.data.equals(history)).toBe(true);
    expect(store.readOutput('S1', 300_000, 900_000)?.data.equals(history.subarray(300_000, 900_000))).toBe(true);
    store = reopen(store);
    expect(store.outputRange('S1')).toEqual({ start: 0, end: history.length });
    expect(store.readOutput('S1', 0)?.data.equals(history)).toBe(true);
  });

  it('compacts from disk, in the background, the pieces a close left uncompacted', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({}, dir);
    const history = agentLikeOutput(1_000_000, 6);
    stream(store, 'S1', 0, history.subarray(0, 700_000));
    store.close(); // one synchronous flush: three 256 KiB pieces, never compacted
    expect(rowsOf(dir).every((r) => r.c === OutputKind.PIECE)).toBe(true);
    store = reopen(store);
    stream(store, 'S1', 700_000, history.subarray(700_000));
    await store.flushAsync();
    await store.compactionsSettled();
    const rows = rowsOf(dir);
    expectContiguous(rows);
    // The old pieces are segments now; only the new tail (under a segment) is still pieces.
    expect(rows.filter((r) => r.e <= 700_000).every((r) => r.c === OutputKind.SEGMENT)).toBe(true);
    expect(store.readOutput('S1', 0)?.data.equals(history)).toBe(true);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(history)).toBe(true);
  });

  it('flushes synchronously while a timed flush is at the worker, and drops the worker\'s stale answer', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({}, dir);
    const a = agentLikeOutput(40_000, 1);
    const b = agentLikeOutput(30_000, 2);
    stream(store, 'S1', 0, a);
    const round = store.flushAsync(); // a is at the worker now
    expect(store.readOutput('S1', 0)?.data.equals(a)).toBe(true);
    stream(store, 'S1', a.length, b);
    expect(store.flush()).toBe(true); // packs a and b here
    const rows = rowsOf(dir);
    expect(await round).toBe(true);
    expect(rowsOf(dir)).toEqual(rows); // nothing written twice
    expectContiguous(rows);
    expect(rows[rows.length - 1].e).toBe(a.length + b.length);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(Buffer.concat([a, b]))).toBe(true);
  });

  it('resolves a timed flush only once what was queued when it was called is on disk', async () => {
    const dir = tmpdir('pipeline');
    const store = makeStore({}, dir);
    const text = agentLikeOutput(3_000_000, 3);
    let at = 0;
    const diskEnd = (): number => onDisk<{ e: number | null }>(dir, "SELECT max(end_offset) e FROM output WHERE session_id = 'S1'")[0].e ?? 0;
    for (let i = 0; i < 30; i++) {
      const size = 70_000 + ((i * 7919) % 30_000); // past chunkBytes: arms the size-triggered round too
      stream(store, 'S1', at, text.subarray(at, at + size));
      at += size;
      const first = store.flushAsync();
      await new Promise((r) => setImmediate(r)); // the size trigger asks for a round while this one runs
      stream(store, 'S1', at, text.subarray(at, at + 5000));
      at += 5000;
      const wanted = at;
      const second = store.flushAsync();
      expect(await second).toBe(true);
      expect(diskEnd()).toBe(wanted);
      await first;
    }
    expect(store.readOutput('S1', 0)?.data.equals(text.subarray(0, at))).toBe(true);
  });

  it('never runs two rounds at once, even when one is asked for just as the previous one ends', async () => {
    const dir = tmpdir('pipeline');
    const store = makeStore({}, dir);
    stream(store, 'S1', 0, agentLikeOutput(70_000, 1)); // a full chunk: arms the size-triggered round
    // While this round is at the worker, the size trigger asks for the next one. This await resumes
    // first, when this round is over and that one has not started yet.
    await store.flushAsync();
    const second = store.flushAsync(); // must be that one, not a round of its own beside it
    store.deleteSession('S1');
    const fresh = agentLikeOutput(10_000, 4);
    stream(store, 'S1', 0, fresh);
    await second;
    // Asked for after `fresh` was queued: resolves once it is on disk, whatever round is at the worker.
    expect(await store.flushAsync()).toBe(true);
    expect(rowsOf(dir).map((r) => [r.s, r.e])).toEqual([[0, 10_000]]);
  });

  it('drops what the worker packed for a stream that restarted at a gap meanwhile', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({}, dir);
    stream(store, 'S1', 0, agentLikeOutput(20_000, 1));
    await store.flushAsync();
    stream(store, 'S1', 20_000, agentLikeOutput(20_000, 2));
    const round = store.flushAsync();
    const after = agentLikeOutput(5000, 3);
    store.appendOutput('S1', 1_000_000, after);
    expect(await round).toBe(true);
    await store.flushAsync();
    expect(rowsOf(dir).map((r) => [r.s, r.e])).toEqual([[1_000_000, 1_005_000]]);
    store = reopen(store);
    expect(store.outputRange('S1')).toEqual({ start: 1_000_000, end: 1_005_000 });
    expect(store.readOutput('S1', 1_000_000)?.data.equals(after)).toBe(true);
  });

  it('drops a compaction that comes back for a session deleted meanwhile', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({}, dir);
    stream(store, 'S1', 0, agentLikeOutput(SEGMENT + 50_000, 1));
    await store.flushAsync(); // pieces on disk
    const round = store.flushAsync(); // plans the compaction: at the background worker now
    store.deleteSession('S1');
    const fresh = agentLikeOutput(10_000, 4);
    stream(store, 'S1', 0, fresh);
    await round;
    await store.compactionsSettled();
    expect(rowsOf(dir).map((r) => [r.s, r.e])).toEqual([[0, 10_000]]);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(fresh)).toBe(true);
  });

  it('falls back to packing on the event loop when the worker dies, losing nothing', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({}, dir);
    const a = agentLikeOutput(100_000, 1);
    stream(store, 'S1', 0, a);
    expect(await store.flushAsync()).toBe(true);
    expect(store.packerName).toBe('worker');
    // Reaches into the store's private CompressionWorkers: the only way to kill a worker thread from outside.
    const workers = (store as unknown as { compression: { state: { flush: { worker: { terminate(): Promise<number> } } } } }).compression.state;
    await workers.flush.worker.terminate();
    const b = agentLikeOutput(100_000, 2);
    stream(store, 'S1', a.length, b);
    expect(await store.flushAsync()).toBe(true);
    expect(store.packerName).toBe('inline');
    expectContiguous(rowsOf(dir));
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(Buffer.concat([a, b]))).toBe(true);
  });

  it('works the same without a worker', async () => {
    const dir = tmpdir('pipeline');
    let store = makeStore({ compressInWorker: false }, dir);
    const history = agentLikeOutput(600_000, 8);
    for (let at = 0; at < history.length; at += 64 * 1024) {
      stream(store, 'S1', at, history.subarray(at, at + 64 * 1024));
      expect(await store.flushAsync()).toBe(true);
    }
    await flushUntil(store, () => rowsOf(dir).some((r) => r.c === OutputKind.SEGMENT), 'a segment');
    expect(store.packerName).toBe('inline');
    expectContiguous(rowsOf(dir));
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(history)).toBe(true);
  });

  it('checkpoints the WAL from the background worker, not in a commit on the event loop', async () => {
    const dir = tmpdir('pipeline');
    const store = makeStore({}, dir);
    // Incompressible: every byte reaches the WAL; a checkpoint is asked for after every ~4 MiB.
    for (let at = 0; at < 10 * 1024 * 1024; at += 256 * 1024) {
      stream(store, 'S1', at, randomBytes(256 * 1024));
      await store.flushAsync();
    }
    const db = (store as unknown as { db: Database.Database }).db;
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(16384); // SQLite's own only as a backstop at 64 MiB
    // Only a checkpoint moves pages into the database file.
    await waitFor(() => statSync(join(dir, 'agentd.db')).size > 4 * 1024 * 1024, 10_000, 'the background checkpoint');
  });

  it('reads a database of schema 1 (gzip chunks, a raw tail) and continues its streams', () => {
    const dir = tmpdir('pipeline');
    const text = agentLikeOutput(150_000, 9);
    const db = new Database(join(dir, 'agentd.db'));
    db.pragma('journal_mode = WAL');
    migrate(db, readMigrations(findMigrationsDir()).slice(0, 1));
    const insert = db.prepare('INSERT INTO output (session_id, start_offset, end_offset, compressed, data) VALUES (?, ?, ?, ?, ?)');
    insert.run('S1', 0, 65_536, 1, gzipSync(text.subarray(0, 65_536), { level: 1 }));
    insert.run('S1', 65_536, 131_072, 1, gzipSync(text.subarray(65_536, 131_072), { level: 1 }));
    insert.run('S1', 131_072, 150_000, 0, text.subarray(131_072));
    db.close();

    let store = makeStore({}, dir);
    expect(onDisk<{ user_version: number }>(dir, 'PRAGMA user_version')[0].user_version).toBe(2);
    expect(store.outputRange('S1')).toEqual({ start: 0, end: 150_000 });
    expect(store.readOutput('S1', 0)?.data.equals(text)).toBe(true);
    expect(store.readOutput('S1', 60_000, 140_000)?.data.equals(text.subarray(60_000, 140_000))).toBe(true);
    const more = agentLikeOutput(70_000, 10);
    stream(store, 'S1', 150_000, more);
    expect(store.flush()).toBe(true);
    store = reopen(store);
    expect(store.readOutput('S1', 0)?.data.equals(Buffer.concat([text, more]))).toBe(true);
    expectContiguous(rowsOf(dir));
  });

  it('holds the same bytes as the stream through random timed and synchronous flushes, gaps, caps, compactions and reopens', async () => {
    // A seeded walk: every check compares the store with the bytes appended since the last gap.
    let seed = Number(process.env.FUZZ_SEED ?? 12345);
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const cap = 300_000;
    const options: Partial<SqliteStoreOptions> = { maxHistoryBytes: cap, segmentBytes: 16 * 1024, chunkBytes: 8 * 1024, quietMs: 30 };
    const dir = tmpdir('pipeline');
    let store = makeStore(options, dir);
    let base = 0; // offset of expected[0]
    let streamStart = 0; // offset of the first byte since the last gap
    let expected = Buffer.alloc(0);
    const source = Buffer.concat([agentLikeOutput(400_000, 11), randomBytes(100_000)]);
    const pending: Array<Promise<boolean>> = [];
    let segmentsSeen = 0;
    for (let step = 0; step < 400; step++) {
      const r = rnd();
      const end = base + expected.length;
      if (r < 0.55) {
        const size = 1 + Math.floor(rnd() * 12_000);
        const from = Math.floor(rnd() * (source.length - size));
        const data = source.subarray(from, from + size);
        store.appendOutput('S1', end, data);
        expected = Buffer.concat([expected, data]);
        if (expected.length > 2 * cap) {
          base += expected.length - 2 * cap;
          expected = expected.subarray(expected.length - 2 * cap);
        }
      } else if (r < 0.58) {
        const data = source.subarray(0, 1 + Math.floor(rnd() * 5000));
        const at = end + 1 + Math.floor(rnd() * 100_000);
        store.appendOutput('S1', at, data);
        base = streamStart = at;
        expected = Buffer.from(data);
      } else if (r < 0.75) {
        pending.push(store.flushAsync());
      } else if (r < 0.82) {
        await Promise.all(pending.splice(0));
      } else if (r < 0.87) {
        expect(store.flush()).toBe(true);
      } else if (r < 0.93) {
        await new Promise((resolve) => setTimeout(resolve, Math.floor(rnd() * 40)));
      } else if (r < 0.95) {
        await Promise.all(pending.splice(0));
        store = reopen(store);
      }
      // The store keeps at least the cap (or everything since the gap), and exactly those bytes.
      const range = store.outputRange('S1');
      expect(range.end).toBe(base + expected.length);
      expect(range.end - range.start).toBeGreaterThanOrEqual(Math.min(cap, range.end - streamStart));
      expect(range.start).toBeGreaterThanOrEqual(base);
      if (step % 10 === 0 || r >= 0.93) {
        segmentsSeen += rowsOf(dir).filter((row) => row.c === OutputKind.SEGMENT).length;
        const got = store.readOutput('S1', range.start)?.data as Buffer;
        expect(got.equals(expected.subarray(range.start - base))).toBe(true);
        const from = range.start + Math.floor(rnd() * (range.end - range.start));
        expect(store.readOutput('S1', from, from + 5000)?.data.equals(expected.subarray(from - base, from - base + 5000))).toBe(true);
      }
    }
    await Promise.all(pending.splice(0));
    await store.flushAsync();
    store = reopen(store);
    const range = store.outputRange('S1');
    expect(store.readOutput('S1', range.start)?.data.equals(expected.subarray(range.start - base))).toBe(true);
    expectContiguous(rowsOf(dir));
    expect(store.integrityCheck()).toBe('ok');
    expect(segmentsSeen).toBeGreaterThan(0); // the walk did go through compactions
  });
});

describe('rows handed to the packer', () => {
  it('takes only full rows when asked (a flood), and the rest on the next ordinary flush', () => {
    const out = SessionOutput.empty();
    out.append(0, Buffer.alloc(700, 1), 1 << 30, 0);
    const whole = out.takeUnsent(256, true);
    expect(whole.map((r) => [r.start, r.end])).toEqual([[0, 256], [256, 512]]);
    expect(out.sentEnd).toBe(512);
    // Nothing whole is left: nothing is taken.
    expect(out.takeUnsent(256, true)).toEqual([]);
    const rest = out.takeUnsent(256);
    expect(rest.map((r) => [r.start, r.end])).toEqual([[512, 700]]);
    expect(rest[0].parts.reduce((n, p) => n + p.length, 0)).toBe(188);
    expect(out.sentEnd).toBe(700);
  });
});
