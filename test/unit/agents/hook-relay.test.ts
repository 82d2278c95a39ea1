import { spawn } from 'node:child_process';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { codexNotifyCommand, hookRelayCommand, hookRelayPath, parseHookPost } from '../../../server/agents/relay';
import { startHookReceiver, HookReceiver } from '../../fixtures/hook-receiver';

const SECRET = 'relay-test-secret';

interface RelayRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the relay like claude or codex would, with the daemon's variables in its environment. */
function runRelay(args: string[], env: Record<string, string>, stdin?: string): Promise<RelayRun> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [hookRelayPath(), ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  child.stdin.end(stdin);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 })));
}

let receiver: HookReceiver;
beforeAll(async () => {
  receiver = await startHookReceiver(SECRET);
});
afterAll(() => receiver.close());

const env = (sessionId: string) => ({ AGENTD_HOOK_URL: receiver.url, AGENTD_HOOK_SECRET: SECRET, AGENTD_SESSION_ID: sessionId });

describe('hook-relay.js', () => {
  it('posts a claude hook (JSON on stdin) with the secret and the session id, printing nothing', async () => {
    const payload = { session_id: 'u1', hook_event_name: 'Stop', last_assistant_message: 'héllo "there"' };
    const run = await runRelay(['Stop'], env('s-claude'), JSON.stringify(payload));
    expect(run).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const post = await receiver.next((p) => p.sessionId === 's-claude');
    expect(post).toMatchObject({ event: 'Stop', sessionId: 's-claude', payload });
  });

  it('posts a codex notify (JSON as the last argument)', async () => {
    const notify = { type: 'agent-turn-complete', 'thread-id': 't1', 'last-assistant-message': 'ok' };
    const run = await runRelay(['CodexNotify', JSON.stringify(notify)], env('s-codex'));
    expect(run).toMatchObject({ code: 0, stdout: '' });
    expect(await receiver.next((p) => p.sessionId === 's-codex')).toMatchObject({ event: 'CodexNotify', payload: notify });
  });

  it('passes text that is not JSON as a string', async () => {
    await runRelay(['Stop'], env('s-text'), 'not json');
    expect((await receiver.next((p) => p.sessionId === 's-text')).payload).toBe('not json');
  });

  it('is refused by the receiver with a wrong secret, and still exits 0 silently', async () => {
    const before = receiver.rejected;
    const run = await runRelay(['Stop'], { ...env('s-bad'), AGENTD_HOOK_SECRET: 'wrong' }, '{}');
    expect(run).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(receiver.rejected).toBe(before + 1);
  });

  it('never sends the secret off the machine', async () => {
    const run = await runRelay(['Stop'], { ...env('s-far'), AGENTD_HOOK_URL: 'http://example.com/hooks', AGENTD_HOOK_DEBUG: '1' }, '{}');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('not a loopback');
  });

  it('exits 0 at once when the daemon is not there', async () => {
    const closed: Server = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((r) => closed.close(() => r()));
    const run = await runRelay(['Stop'], { ...env('s-gone'), AGENTD_HOOK_URL: `http://127.0.0.1:${port}/hooks` }, '{}');
    expect(run).toMatchObject({ code: 0, stdout: '' });
    expect(run.ms).toBeLessThan(1_500);
    const none = await runRelay(['Stop'], { PATH: process.env.PATH ?? '' }, '{}');
    expect(none).toMatchObject({ code: 0, stdout: '' });
  });

  it('gives up after about 2 s when the daemon does not answer', async () => {
    const hung: Server = createServer(() => {
      // Never answers.
    });
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const { port } = hung.address() as AddressInfo;
    try {
      const run = await runRelay(['PermissionRequest'], { ...env('s-hung'), AGENTD_HOOK_URL: `http://127.0.0.1:${port}/hooks` }, '{}');
      expect(run).toMatchObject({ code: 0, stdout: '' });
      expect(run.ms).toBeGreaterThanOrEqual(1_900);
      expect(run.ms).toBeLessThan(3_500);
    } finally {
      hung.closeAllConnections();
      await new Promise<void>((r) => hung.close(() => r()));
    }
  });

  it('does not wait forever for a stdin that never closes', async () => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [hookRelayPath(), 'Stop'], { env: { PATH: process.env.PATH ?? '', ...env('s-open') }, stdio: ['pipe', 'pipe', 'pipe'] });
    const code = await new Promise((resolve) => child.on('close', resolve));
    child.stdin.destroy();
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(3_500);
  });
});

describe('relay.ts', () => {
  it('runs the relay with this Node; codex gets the CodexNotify event name', () => {
    expect(hookRelayCommand()).toEqual([process.execPath, hookRelayPath()]);
    expect(codexNotifyCommand()).toEqual([process.execPath, hookRelayPath(), 'CodexNotify']);
  });

  it('reads a relay post and refuses other bodies', () => {
    expect(parseHookPost({ event: 'Stop', sessionId: 's', payload: { a: 1 } })).toEqual({ event: 'Stop', sessionId: 's', payload: { a: 1 } });
    expect(parseHookPost({ event: 'Stop' })).toBeNull();
    expect(parseHookPost('x')).toBeNull();
  });
});
