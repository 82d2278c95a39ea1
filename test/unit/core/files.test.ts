import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../server/common/files';

describe('writing a small file whole or not at all (writeFileAtomic)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'agentd-files-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes the content with the mode asked for and leaves no temporary file', () => {
    const file = join(dir, 'token');
    writeFileAtomic(file, 'secret\n', { mode: 0o600 });
    expect(readFileSync(file, 'utf8')).toBe('secret\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['token']);
  });

  it('replaces an existing file (a stale agentd.port) in one step', () => {
    const file = join(dir, 'agentd.port');
    writeFileSync(file, '41234\n');
    const before = statSync(file).ino;
    writeFileAtomic(file, '3000\n');
    expect(readFileSync(file, 'utf8')).toBe('3000\n');
    // A new inode: the name moved to a complete file rather than the old one being truncated and rewritten.
    expect(statSync(file).ino).not.toBe(before);
    expect(readdirSync(dir)).toEqual(['agentd.port']);
  });

  it('with exclusive, refuses to replace an existing file and leaves it untouched', () => {
    const file = join(dir, 'token');
    writeFileSync(file, 'first\n');
    expect(() => writeFileAtomic(file, 'second\n', { exclusive: true })).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(readFileSync(file, 'utf8')).toBe('first\n');
    expect(readdirSync(dir)).toEqual(['token']);
  });

  it('with exclusive, creates a missing file', () => {
    const file = join(dir, 'token');
    writeFileAtomic(file, 'first\n', { mode: 0o600, exclusive: true });
    expect(readFileSync(file, 'utf8')).toBe('first\n');
    expect(readdirSync(dir)).toEqual(['token']);
  });
});
