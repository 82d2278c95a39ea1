import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { MAX_PENDING_INPUT_BYTES } from '../../../server/pty/writer';
import { NodePtyBackend } from '../../../server/pty/NodePtyBackend';
import { PtyProcess } from '../../../server/pty/PtyBackend';
import { waitFor } from '../../helpers/wait';

const backend = new NodePtyBackend();

function spawn(script: string): { pty: PtyProcess; output: () => string; exited: Promise<void> } {
  const pty = backend.spawn({ file: 'bash', args: ['--norc', '--noprofile', '-c', script], cwd: '/tmp', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color' }, cols: 80, rows: 24 });
  const chunks: Buffer[] = [];
  pty.onData((d) => chunks.push(d));
  const exited = new Promise<void>((resolve) => pty.onExit(() => resolve()));
  return { pty, output: () => Buffer.concat(chunks).toString('latin1'), exited };
}

describe('input to a PTY', () => {
  it('reaches a program that reads it late, whole and in order, however much the kernel refuses at first', async () => {
    // Raw mode (no line editing, no echo); the program sleeps before reading, so the PTY's input buffer fills and writes are refused.
    const { pty, output, exited } = spawn('stty raw -echo; echo READY; sleep 0.5; head -c 300000 | sha256sum; echo DONE');
    await waitFor(() => output().includes('READY'), 10_000, 'the program to be in raw mode');
    const input = Buffer.from(randomBytes(225_000).toString('base64'));
    for (let at = 0; at < input.length; at += 60_000) pty.write(input.subarray(at, at + 60_000));
    pty.write('x'.repeat(300_000 - input.length));
    const expected = createHash('sha256').update(Buffer.concat([input, Buffer.from('x'.repeat(300_000 - input.length))])).digest('hex');
    await waitFor(() => output().includes('DONE'), 20_000, 'the program to have read it all');
    expect(output()).toContain(expected);
    await exited;
    pty.dispose();
  }, 30_000);

  it('refuses input beyond 4 MiB that the program leaves unread, writing none of it, and takes input again once it reads', async () => {
    const go = `/tmp/agentd-input-go-${process.pid}`;
    rmSync(go, { force: true });
    // The program does not read until the file appears, then reads exactly 4 MiB and hashes it.
    const { pty, output } = spawn(`stty raw -echo; echo READY; while [ ! -e ${go} ]; do sleep 0.02; done; head -c ${MAX_PENDING_INPUT_BYTES} | sha256sum; echo DONE; exec cat >/dev/null`);
    try {
      await waitFor(() => output().includes('READY'), 10_000, 'the program to be in raw mode');
      const chunks = [0, 1, 2, 3].map((i) => Buffer.alloc(MAX_PENDING_INPUT_BYTES / 4, 97 + i));
      expect(chunks.map((c) => pty.write(c))).toEqual([true, true, true, true]);
      // The kernel took some (its buffers are KBs); another MiB would take the wait past 4 MiB.
      expect(pty.write(Buffer.alloc(MAX_PENDING_INPUT_BYTES / 4, 122))).toBe(false);
      writeFileSync(go, '');
      await waitFor(() => output().includes('DONE'), 20_000, 'the program to have read the 4 MiB');
      expect(output()).toContain(createHash('sha256').update(Buffer.concat(chunks)).digest('hex'));
      expect(pty.write('taken again')).toBe(true);
    } finally {
      rmSync(go, { force: true });
      // Closing the master hangs up the program (cat).
      pty.dispose();
    }
  }, 30_000);

  it('drops input for a program that has exited, without an error', async () => {
    const { pty, exited } = spawn('exit 0');
    await exited;
    expect(() => pty.write('too late\r')).not.toThrow();
    pty.dispose();
    expect(() => pty.write('after dispose\r')).not.toThrow();
  });
});
