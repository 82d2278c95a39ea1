import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { SqliteStore } from '../../../server/store/SqliteStore';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { patternBytes } = require('../../fixtures/store/pattern.js') as { patternBytes: (offset: number, size: number) => Buffer };

const FIXTURES = join(__dirname, '../../fixtures/store');
/** The flush interval is 1 s: anything appended longer ago than this must have been committed. */
const DURABLE_AFTER_MS = 1500;
const ROUNDS = 5;

afterAll(cleanupTmp);

interface Progress {
  at: number;
  offset: number;
}

/** Starts the writer, lets it run `runMs` after it is ready, SIGKILLs it; returns its progress reports and the kill time. */
async function runAndKill(dataDir: string, runMs: number): Promise<{ progress: Progress[]; killedAt: number }> {
  const child = spawn(process.execPath, ['-r', join(FIXTURES, 'ts-require.js'), join(FIXTURES, 'crash-writer.js'), dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const progress: Progress[] = [];
  let ready = false;
  let stderr = '';
  let pending = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('ready')) ready = true;
      else {
        const [at, offset] = line.split(' ').map(Number);
        progress.push({ at, offset });
      }
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await waitFor(() => ready || child.exitCode !== null, 20_000, 'the writer to start');
  if (!ready) throw new Error(`the crash writer did not start: ${stderr}`);
  await new Promise((r) => setTimeout(r, runMs));
  child.kill('SIGKILL');
  const killedAt = Date.now();
  await exited; // reaped: its lock is now stale, not held by a zombie
  return { progress, killedAt };
}

describe('SqliteStore after a SIGKILL mid-stream', () => {
  it('keeps the database intact and every byte appended more than 1.5 s before the kill', async () => {
    const dataDir = tmpdir('crash');
    for (let round = 0; round < ROUNDS; round++) {
      // Random kill points: mid-transaction, mid-compression, between ticks.
      const { progress, killedAt } = await runAndKill(dataDir, 1800 + Math.floor(Math.random() * 1200));
      const durable = progress.filter((p) => p.at <= killedAt - DURABLE_AFTER_MS).pop()?.offset ?? 0;
      expect(durable).toBeGreaterThan(0);

      const store = SqliteStore.open({ dataDir });
      try {
        expect(store.integrityCheck()).toBe('ok');
        const { start, end } = store.outputRange('crash');
        expect(start).toBe(0);
        expect(end).toBeGreaterThanOrEqual(durable);
        const data = store.readOutput('crash', 0)?.data as Buffer;
        expect(data.length).toBe(end);
        expect(data.equals(patternBytes(0, end))).toBe(true);
        expect(store.getSession('crash')?.outputBytes).toBe(end);
        // The next round starts the stream again from 0 on the same database: clear it.
        store.deleteSession('crash');
      } finally {
        store.close();
      }
    }
  }, 120_000);
});
