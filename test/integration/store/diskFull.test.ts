import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../../server/store/SqliteStore';
import { record } from '../../unit/store/storeContract';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';

/** Small enough to fill in a blink, large enough for the database, its WAL and shm. */
const TMPFS_SIZE = '4m';

/** Mounts a tiny tmpfs on a fresh folder; returns why not if this machine will not let us (not root, no CAP_SYS_ADMIN). */
function mountTmpfs(): { dir: string } | { reason: string } {
  const dir = tmpdir('tmpfs');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (err) {
    return { reason: ((err as { stderr?: Buffer }).stderr?.toString() || (err as Error).message).trim() };
  }
}

/** Writes a file until the filesystem refuses another byte; returns its path. */
function fillDisk(dir: string): string {
  const file = join(dir, 'filler');
  const fd = openSync(file, 'w');
  try {
    for (const block of [65536, 4096, 512, 1]) {
      const buf = Buffer.alloc(block, 0x55);
      for (;;) {
        try {
          writeSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

const mounted = mountTmpfs();
afterAll(() => {
  if ('dir' in mounted) execFileSync('umount', [mounted.dir]);
  cleanupTmp();
});

const title = 'reports degraded when a real disk fills, keeps the batch, and recovers once space frees';
if ('reason' in mounted) {
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED "${title}": cannot mount a ${TMPFS_SIZE} tmpfs here (${mounted.reason}); run as root to test a real disk full`);
}

describe('SqliteStore on a full disk', () => {
  ('dir' in mounted ? it : it.skip)(title, async () => {
    const dataDir = (mounted as { dir: string }).dir;
    let store = SqliteStore.open({ dataDir, flushIntervalMs: 50 });
    try {
      store.putSession(record());
      store.appendOutput('S1', 0, Buffer.from('before the disk filled\r\n'));
      expect(store.flush()).toBe(true);
      store.checkpoint(); // WAL truncated: the next commit must find new space

      const filler = fillDisk(dataDir);
      const during = randomBytes(512 * 1024); // incompressible: needs real pages
      store.appendOutput('S1', 24, during);
      store.addEvent({ sessionId: 'S1', type: 'warned', at: 1, detail: { note: 'written while the disk was full' } });
      expect(store.flush()).toBe(false);
      expect(store.health()).toEqual({ status: 'degraded', detail: expect.stringMatching(/^(disk full|disk write error) \(SQLITE_(FULL|IOERR)/) });
      // Still readable, still accepting output.
      store.appendOutput('S1', 24 + during.length, Buffer.from('after'));
      expect(store.readOutput('S1', 24, 24 + during.length)?.data.equals(during)).toBe(true);
      // Retries on its tick keep failing while the disk is full.
      await waitFor(() => /^\D*\(SQLITE_\w+: [^)]*\): ([2-9]|\d\d+) failed/.test(store.health().detail ?? ''), 5000, 'a failed retry');

      unlinkSync(filler);
      await waitFor(() => store.health().status === 'ok', 5000, 'the tick to retry and succeed');
      store.close();

      store = SqliteStore.open({ dataDir });
      expect(store.integrityCheck()).toBe('ok');
      const all = store.readOutput('S1', 0)?.data as Buffer;
      expect(all.subarray(0, 24).toString()).toBe('before the disk filled\r\n');
      expect(all.subarray(24, 24 + during.length).equals(during)).toBe(true);
      expect(all.subarray(24 + during.length).toString()).toBe('after');
      expect(store.listEvents('S1')).toEqual([{ sessionId: 'S1', type: 'warned', at: 1, detail: { note: 'written while the disk was full' } }]);
    } finally {
      store.close();
    }
  });
});
