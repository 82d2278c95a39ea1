import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/**
 * Writes a small file so that a reader sees either no file (or the old one)
 * or the whole new content, never a half-written one: scripts poll for
 * `agentd.port` and read it the moment it exists. The data is written and
 * synced to a temporary name beside it, then renamed over `path`, or, with
 * `exclusive`, linked to it (failing with EEXIST if `path` exists, which it
 * leaves untouched).
 */
export function writeFileAtomic(path: string, data: string, opts: { mode?: number; exclusive?: boolean } = {}): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', opts.mode ?? 0o644);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    if (opts.exclusive) linkSync(tmp, path);
    else renameSync(tmp, path);
  } finally {
    // Gone already after a rename; after a link (or a failure) the temporary name goes.
    rmSync(tmp, { force: true });
  }
}
