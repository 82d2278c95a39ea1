import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir as osTmp } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

/** A fresh temp folder (real path), removed by `cleanupTmp`. */
export function tmpdir(name: string): string {
  const dir = realpathSync(mkdtempSync(join(osTmp(), `agentd-${name}-`)));
  made.push(dir);
  return dir;
}

export function cleanupTmp(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}
