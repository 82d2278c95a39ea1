import { statSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, TestDaemon } from '../../helpers/app';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { testConfig } from '../../../server/config/load';
import { ensureToken } from '../../../server/http/auth';
import { MemoryStore } from '../../../server/store/MemoryStore';
import { captureLogger } from '../../unit/health/fakes';

let d: TestDaemon;
beforeAll(async () => {
  d = await startDaemon({
    agents: {
      // Revives with arguments that fail at once, as `claude --resume` does for an unknown conversation.
      fragile: { command: 'python3', args: ['-i', '-q'], resumeArgs: ['-c', 'import sys; print("No conversation found with session ID: {agentSessionId}"); sys.exit(1)'] },
      // Never reads its terminal: input piles up in front of it.
      deaf: { command: 'bash', args: ['--norc', '--noprofile', '-c', 'stty raw -echo; echo DEAF-READY; exec sleep 600'] },
      flood: { command: 'bash', args: ['--norc', '--noprofile', '-c', 'read go; head -c 24000000 /dev/zero | tr "\\0" "x"; echo; echo FLOOD-END; exec cat'] },
    },
  });
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

describe('robustness', () => {
  it('says why a revival failed instead of looping', async () => {
    const s = await d.create({ agent: 'fragile' });
    await d.api('DELETE', `/api/sessions/${s.id}`);
    const revived = await d.api('POST', `/api/sessions/${s.id}/revive`);
    expect(revived.status).toBe(200);
    const ended = await waitFor(async () => {
      const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
      return session.state === 'exited' ? session : null;
    }, 10_000, 'the failed revival');
    expect(ended.endReason).toBe(`revive failed: No conversation found with session ID: ${s.id}`);
  });

  it('closes a socket that never authenticates with 4401 after 5 s, having sent nothing', async () => {
    const s = await d.create({ agent: 'shell' });
    const silent = d.socket(`/api/sessions/${s.id}/ws`, {});
    await silent.waitOpen();
    expect(await silent.waitClose(8_000)).toBe(4401);
    expect(silent.frames).toHaveLength(0);
    expect((await d.api('GET', `/api/sessions/${s.id}`)).json.session.clients).toBe(0);
  }, 15_000);

  it('never slows the agent or other clients for a client that stops reading; it gets a snapshot and carries on', async () => {
    const s = await d.create({ agent: 'flood' });
    const fast = d.socket(`/api/sessions/${s.id}/ws`);
    const slow = d.socket(`/api/sessions/${s.id}/ws`);
    const fastSnap = await fast.nextJson((f) => f.type === 'snapshot');
    await slow.nextJson((f) => f.type === 'snapshot');
    // The slow client's TCP socket stops reading: the server's send buffer for it fills up.
    (slow.ws as any)._socket.pause();
    fast.sendBytes('go\r');
    await fast.waitOutput('FLOOD-END', 60_000);
    const history = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
    const end = Number(history.headers['x-agentd-offset-end']);
    await waitFor(() => fastSnap.offset + fast.output.length >= end, 10_000, 'the fast client to have everything');
    expect(fastSnap.offset + fast.output.length).toBe(end);
    const slowBytesBefore = slow.output.length;
    (slow.ws as any)._socket.resume();
    // Once drained, the slow client is resynchronised with a snapshot at the current end instead of the backlog.
    const resync = await slow.nextJson((f) => f.type === 'snapshot' && f.offset > fastSnap.offset, 20_000);
    expect(resync.offset).toBeGreaterThan(0);
    expect(slow.output.length - slowBytesBefore).toBeLessThan(24_000_000);
    slow.sendBytes('still-here\r');
    await slow.waitOutput('still-here');
  }, 90_000);

  it('refuses input beyond 4 MiB that the program leaves unread: 503 unavailable on REST, an error frame on the socket', async () => {
    const s = await d.create({ agent: 'deaf' });
    const sock = d.socket(`/api/sessions/${s.id}/ws`);
    await sock.nextJson((f) => f.type === 'snapshot');
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}/history`)).text.includes('DEAF-READY'), 10_000, 'the program to stop reading');
    const mb = 'i'.repeat(1_000_000);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await d.api('POST', `/api/sessions/${s.id}/input`, { data: mb })).status);
    expect(statuses).toEqual([202, 202, 202, 202]);
    const refused = await d.api('POST', `/api/sessions/${s.id}/input`, { data: mb });
    expect(refused.status).toBe(503);
    expect(refused.json.error.code).toBe('unavailable');
    expect(refused.json.error.message).toMatch(/not read the last 4 MiB/);
    sock.sendBytes(Buffer.alloc(1_000_000, 0x6a));
    const frame = await sock.nextJson((f) => f.type === 'error');
    expect(frame.code).toBe('unavailable');
    // The session and the daemon carry on.
    expect((await d.api('GET', `/api/sessions/${s.id}`)).json.session.state).toBe('running');
    expect((await d.api('DELETE', `/api/sessions/${s.id}`)).status).toBe(200);
  }, 30_000);

  it('writes a generated token file with mode 0600 and never logs the token', async () => {
    const dataDir = tmpdir('token');
    const t = ensureToken(testConfig({ dataDir, allowedRoots: [dataDir] }));
    expect(t.from).toBe('generated');
    expect(statSync(join(dataDir, 'token')).mode & 0o777).toBe(0o600);
    expect(t.token.length).toBeGreaterThanOrEqual(32);
    expect(ensureToken(testConfig({ dataDir, allowedRoots: [dataDir] })).token).toBe(t.token);
  });

  it('removes sessions ended longer ago than RETENTION_DAYS at start-up', async () => {
    const store = new MemoryStore();
    const now = Date.now();
    const base = { agent: 'shell', projectPath: '/tmp', pid: null, pidStartTime: null, tag: null, agentSessionId: null, createdAt: now, lastActivityAt: now, expiresAt: null, warnedAt: null, cols: 80, rows: 24, exitCode: 0, signal: null, endReason: 'closed by client', deviceToken: null, outputBytes: 0 } as const;
    store.putSession({ ...base, id: 'old-one', state: 'closed', endedAt: now - 31 * 86_400_000 });
    store.putSession({ ...base, id: 'recent-one', state: 'closed', endedAt: now - 29 * 86_400_000 });
    const other = await startDaemon({ retentionDays: 30 }, store);
    await other.app.restore();
    const ids = (await other.api('GET', '/api/sessions')).json.sessions.map((s: any) => s.id);
    expect(ids).toEqual(['recent-one']);
    await other.dispose();
  });

  it('starts and revives nothing once shutdown has begun (a client reconnecting mid-stop would bring its session back)', async () => {
    const other = await startDaemon();
    const ended = await other.create({ agent: 'shell' });
    await other.api('DELETE', `/api/sessions/${ended.id}`);
    const live = await other.create({ agent: 'shell' });
    const stopping = other.app.pool.shutdown('daemon_stopped');
    await expect(other.app.pool.revive(other.app.pool.get(ended.id), 'attach')).rejects.toMatchObject({ code: 'unavailable', message: 'the daemon is stopping; nothing new starts until it is back' });
    expect(() => other.app.pool.create({ agent: 'shell', projectPath: other.root })).toThrow('the daemon is stopping');
    await stopping;
    expect(other.app.pool.get(live.id).record).toMatchObject({ state: 'exited', endReason: 'daemon_stopped' });
    expect(other.app.pool.liveCount()).toBe(0);
    await other.dispose();
  });

  it('logs the end of a session once: closing one that already exited logs nothing more', async () => {
    const log = captureLogger('info');
    const other = await startDaemon({}, undefined, { logger: log.logger });
    const s = await other.create({ agent: 'shell' });
    await other.api('POST', `/api/sessions/${s.id}/input`, { data: 'exit 3\r' });
    await waitFor(async () => (await other.api('GET', `/api/sessions/${s.id}`)).json.session.state === 'exited', 5_000, 'the shell to exit');
    const before = log.lines.length;
    const closed = await other.api('DELETE', `/api/sessions/${s.id}`);
    expect(closed.json.session).toMatchObject({ state: 'exited', exitCode: 3 });
    expect(log.lines.slice(before).filter((l) => l.sessionId === s.id)).toEqual([]);
    const live = await other.create({ agent: 'shell' });
    await other.api('DELETE', `/api/sessions/${live.id}`);
    expect(log.lines.filter((l) => l.sessionId === live.id && l.msg === 'session ended')).toEqual([expect.objectContaining({ state: 'closed', reason: 'closed by client' })]);
    await other.dispose();
  });

  it('lists a stored session whose profile was removed from the configuration, and says so when asked to revive it', async () => {
    const store = new MemoryStore();
    const now = Date.now();
    store.putSession({ id: 'orphan', agent: 'gone', projectPath: '/tmp', state: 'closed', pid: null, pidStartTime: null, tag: null, agentSessionId: null, createdAt: now, lastActivityAt: now, expiresAt: null, warnedAt: null, endedAt: now, cols: 80, rows: 24, exitCode: 0, signal: null, endReason: 'closed by client', deviceToken: null, outputBytes: 0 });
    const other = await startDaemon({}, store);
    await other.app.restore();
    expect((await other.api('GET', '/api/sessions/orphan')).json.session).toMatchObject({ id: 'orphan', agent: 'gone', state: 'closed' });
    const revived = await other.api('POST', '/api/sessions/orphan/revive');
    expect(revived.status).toBe(400);
    expect(revived.json).toEqual({ error: { code: 'agent_unavailable', message: 'gone: this profile is no longer in the configuration; add it back to start the session again' } });
    expect((await other.api('GET', '/api/sessions/orphan')).json.session.state).toBe('closed');
    await other.dispose();
  });
});
