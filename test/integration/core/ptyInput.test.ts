import { createHash, randomBytes } from 'node:crypto';
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

  it('drops input for a program that has exited, without an error', async () => {
    const { pty, exited } = spawn('exit 0');
    await exited;
    expect(() => pty.write('too late\r')).not.toThrow();
    pty.dispose();
    expect(() => pty.write('after dispose\r')).not.toThrow();
  });
});
