import { startDaemon, TestDaemon } from '../../helpers/app';
import { withCpuLock } from '../../helpers/cpuLock';
import { cleanupTmp } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { ProcessTable, readProc } from '../../../server/pty/processes';
import { SESSION_TAG_ENV } from '../../../server/pty/kill';

const HOUR = 3600;
const daemons: TestDaemon[] = [];
async function daemon(overrides: Record<string, unknown>): Promise<TestDaemon> {
  const d = await startDaemon({ healthCheckIntervalSeconds: 0.5, ...overrides });
  daemons.push(d);
  return d;
}
afterAll(async () => {
  for (const d of daemons) await d.dispose();
  cleanupTmp();
});

function alive(tag: string): number[] {
  return new ProcessTable().tagged(SESSION_TAG_ENV, tag).filter((pid) => readProc(pid)?.state !== 'Z');
}

describe('health monitor with real processes', () => {
  it('kills a session whose grandchild allocates past the memory limit within two ticks, grandchild included', async () => {
    const d = await daemon({ maxMemoryPerSessionMB: 100 });
    const s = await d.create({ agent: 'shell' });
    const tag = d.app.pool.get(s.id).record.tag!;
    await d.api('POST', `/api/sessions/${s.id}/input`, { data: `bash -c 'python3 -c "x = bytearray(200 * 2**20); import time; time.sleep(120)"' &\r` });
    const ended = await waitFor(async () => {
      const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
      return session.state === 'killed' ? session : null;
    }, 10_000, 'memory kill');
    expect(ended.endReason).toMatch(/^memory_limit: [\d.]+ MB > 100 MB$/);
    expect(Number(/: ([\d.]+) MB/.exec(ended.endReason)![1])).toBeGreaterThan(100);
    expect(alive(tag)).toEqual([]);
  });

  it('kills a sustained busy loop for CPU, and lets a 1.5 s burst live', async () => {
    await withCpuLock(async () => {
      const d = await daemon({ cpuUsageLimitPercent: 50, cpuSustainSeconds: 2.5 });
      const burst = await d.create({ agent: 'shell' });
      const hog = await d.create({ agent: 'shell' });
      await d.api('POST', `/api/sessions/${burst.id}/input`, { data: `timeout 1.5 python3 -c 'while True: pass'; echo burst-done\r` });
      await d.api('POST', `/api/sessions/${hog.id}/input`, { data: `bash -c "python3 -c 'while True: pass'" &\r` });
      const killed = await waitFor(async () => {
        const session = (await d.api('GET', `/api/sessions/${hog.id}`)).json.session;
        return session.state === 'killed' ? session : null;
      }, 15_000, 'cpu kill');
      expect(killed.endReason).toMatch(/^cpu_limit: [\d.]+% > 50%/);
      await waitFor(async () => (await d.api('GET', `/api/sessions/${burst.id}/history`)).text.includes('burst-done'), 5_000);
      expect((await d.api('GET', `/api/sessions/${burst.id}`)).json.session.state).toBe('running');
    });
  });

  it('sends a warning frame, then expires the session with an expired frame', async () => {
    const d = await daemon({ sessionTimeoutHours: 3 / HOUR, sessionWarningHours: 1.5 / HOUR });
    const s = await d.create({ agent: 'shell' });
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    const warning = await ws.nextJson((f) => f.type === 'warning', 5_000);
    expect(new Date(warning.expiresAt).toISOString()).toBe(warning.expiresAt);
    const warnedSession = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect(warnedSession.warnedAt).not.toBeNull();
    expect(warning.expiresAt).toBe(warnedSession.expiresAt); // the same deadline, to the millisecond
    await ws.nextJson((f) => f.type === 'expired', 5_000);
    const exit = await ws.nextJson((f) => f.type === 'exit', 5_000);
    expect(exit.reason).toMatch(/lifetime/);
    const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect(session.state).toBe('expired');
    expect(ws.json().filter((f) => f.type === 'warning')).toHaveLength(1);
    // History is kept; keep-alive on an ended session is a conflict.
    expect((await d.api('GET', `/api/sessions/${s.id}/history`)).status).toBe(200);
    const late = await d.api('POST', '/api/sessions/keep-alive', { sessionId: s.id });
    expect(late.status).toBe(409);
  });

  it('extends the lifetime on keep-alive and clears the warning', async () => {
    const d = await daemon({ sessionTimeoutHours: 3 / HOUR, sessionWarningHours: 1.5 / HOUR });
    const s = await d.create({ agent: 'shell' });
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'warning', 5_000);
    const before = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    const res = await d.api('POST', '/api/sessions/keep-alive', { sessionId: s.id });
    expect(res.status).toBe(200);
    expect(res.json.session.warnedAt).toBeNull();
    expect(new Date(res.json.expiresAt).getTime()).toBeGreaterThan(new Date(before.expiresAt).getTime());
    // Past the original deadline it still runs; a keep-alive frame extends it again.
    await waitFor(() => Date.now() > new Date(before.expiresAt).getTime() + 500, 5_000);
    ws.send({ type: 'keep-alive' });
    expect((await d.api('GET', `/api/sessions/${s.id}`)).json.session.state).toBe('running');
  });

  it('returns what a python3 -i profile printed for its recap prompt', async () => {
    const d = await daemon({
      agents: { py: { command: 'python3', args: ['-i', '-q'], env: { PYTHONUNBUFFERED: '1' }, recapPrompt: "print('RECAP: we computed ' + str(6*7))", idleMs: 400, promptPattern: '^>>> ?$' } },
    });
    const s = await d.create({ agent: 'py' });
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}/history`)).text.includes('>>>'));
    const res = await d.api('POST', '/api/sessions/keep-alive', { sessionId: s.id, action: 'recap' });
    expect(res.status).toBe(200);
    expect(res.json.recap).toBe('RECAP: we computed 42');
    const messages = (await d.api('GET', `/api/sessions/${s.id}/messages`)).json.messages;
    expect(messages.some((m: any) => m.kind === 'recap' && m.role === 'assistant' && m.content === 'RECAP: we computed 42')).toBe(true);
  });

  it('culls a session with no client and no turn after IDLE_TIMEOUT_HOURS, and never one with a client', async () => {
    const d = await daemon({ idleTimeoutHours: 1.5 / HOUR });
    const lonely = await d.create({ agent: 'shell' });
    const watched = await d.create({ agent: 'shell' });
    const ws = d.socket(`/api/sessions/${watched.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    const culled = await waitFor(async () => {
      const session = (await d.api('GET', `/api/sessions/${lonely.id}`)).json.session;
      return session.state === 'expired' ? session : null;
    }, 8_000, 'idle cull');
    expect(culled.endReason).toBe('idle');
    expect((await d.api('GET', `/api/sessions/${watched.id}`)).json.session.state).toBe('running');

    // A revival is activity: the revived session gets a whole idle timeout again, not a cull at the next tick.
    expect((await d.api('POST', `/api/sessions/${lonely.id}/revive`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1_000)); // two ticks, under the 1.5 s timeout
    expect((await d.api('GET', `/api/sessions/${lonely.id}`)).json.session.state).toBe('running');
    const health = (await d.api('GET', '/api/health')).json;
    expect(health.monitor.lastTickAt).not.toBeNull();
    expect(typeof health.monitor.lastTickMs).toBe('number');
  });
});
