import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Tests that measure CPU (busy loops read against the truth, a CPU-limit kill)
 * run one at a time across jest's workers: on two cores, one's busy loops take
 * the CPU the other's loop is expected to get. A directory is the lock (mkdir
 * is atomic); one whose holder is gone is taken over.
 */
const LOCK = join(tmpdir(), 'agentd-test-cpu.lock');

export async function withCpuLock<T>(run: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch {
      if (!holderAlive()) rmSync(LOCK, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await run();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

function holderAlive(): boolean {
  try {
    process.kill(Number(readFileSync(join(LOCK, 'pid'), 'utf8')), 0);
    return true;
  } catch (err) {
    // No pid file yet (being written): alive; no such process: gone.
    return (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
