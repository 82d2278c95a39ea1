import { startDaemon, TestDaemon } from '../../helpers/app';
import { cleanupTmp } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';

const PY = { command: 'python3', args: ['-i', '-q'], env: { PYTHONUNBUFFERED: '1' }, idleMs: 300, promptPattern: '^>>> ?$' };
let d: TestDaemon;
beforeAll(async () => {
  d = await startDaemon({ chatWaitSeconds: 20, agents: { py: PY } });
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

describe('POST /api/chat with a hook-less profile', () => {
  it('creates the session, answers with the turn text, and records the messages', async () => {
    const res = await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message: 'print(2**10)' });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ sessionId: expect.any(String), turnId: expect.any(String), status: 'completed', response: '1024' });
    const messages = (await d.api('GET', `/api/sessions/${res.json.sessionId}/messages`)).json.messages;
    expect(messages).toEqual([
      expect.objectContaining({ turnId: res.json.turnId, role: 'user', content: 'print(2**10)', at: expect.any(String) }),
      expect.objectContaining({ turnId: res.json.turnId, role: 'assistant', content: '1024', at: expect.any(String) }),
    ]);
  });

  it('queues a message sent while a turn runs, so answers never interleave', async () => {
    const first = await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message: 'import time; time.sleep(0.8); print("first-done")' });
    const id = first.json.sessionId;
    const [a, b] = await Promise.all([
      d.api('POST', '/api/chat', { sessionId: id, message: 'time.sleep(0.5); print("A-" + "done")' }),
      d.api('POST', '/api/chat', { sessionId: id, message: 'print("B-" + "done")' }),
    ]);
    expect(a.json.response).toBe('A-done');
    expect(b.json.response).toBe('B-done');
    const messages = (await d.api('GET', `/api/sessions/${id}/messages`)).json.messages;
    expect(messages.map((m: any) => m.content)).toEqual(expect.arrayContaining(['A-done', 'B-done']));
  });

  it('answers 202 running past CHAT_WAIT_SECONDS, then delivers the answer as a turn frame and in messages', async () => {
    const impatient = await startDaemon({ chatWaitSeconds: 1, agents: { py: PY } });
    const d = impatient;
    const s = (await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message: '1+1' })).json;
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.sessionId}`)).json.session.state === 'idle');
    const ws = d.socket(`/api/sessions/${s.sessionId}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    const slow = await d.api('POST', '/api/chat', { sessionId: s.sessionId, message: 'import time; time.sleep(3); print("slow-" + "answer")' });
    expect(slow.status).toBe(202);
    expect(slow.json).toEqual({ sessionId: s.sessionId, turnId: expect.any(String), status: 'running' });
    expect((await d.api('GET', `/api/sessions/${s.sessionId}`)).json.session.state).toBe('busy');
    const frame = await ws.nextJson((f) => f.type === 'turn' && f.turnId === slow.json.turnId, 10_000);
    expect(frame).toMatchObject({ status: 'completed', response: 'slow-answer' });
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.sessionId}`)).json.session.state === 'idle');
    await impatient.dispose();
  });

  it('refuses bad chat requests with the contract errors', async () => {
    expect((await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root })).status).toBe(400);
    expect((await d.api('POST', '/api/chat', { message: 'hi' })).status).toBe(400);
    expect((await d.api('POST', '/api/chat', { message: 'hi', sessionId: 'bad id' })).status).toBe(400);
    expect((await d.api('POST', '/api/chat', { message: 'hi', agent: 'nope' })).status).toBe(400);
    // Nothing to send: only spaces and control characters (an Enter on an empty prompt ends no turn).
    const before = (await d.api('GET', '/api/sessions')).json.sessions.length;
    for (const message of [' \t\n', '\x1b', '\x03\r']) {
      const blank = await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message });
      expect(blank.status).toBe(400);
      expect(blank.json.error.message).toBe('message must be a string with visible text, of at most 100000 characters');
    }
    expect((await d.api('GET', '/api/sessions')).json.sessions.length).toBe(before);
    const closed = (await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message: '1' })).json.sessionId;
    await d.api('DELETE', `/api/sessions/${closed}`);
    const res = await d.api('POST', '/api/chat', { sessionId: closed, message: '2' });
    expect(res.status).toBe(409);
    expect(res.json.error.code).toBe('conflict');
    expect((await d.api('POST', `/api/sessions/${closed}/answer`, { option: '1' })).status).toBe(409);
  });

  it('revives a closed session on request and 409s while it runs', async () => {
    const id = (await d.api('POST', '/api/chat', { agent: 'py', projectPath: d.root, message: 'x = 5' })).json.sessionId;
    expect((await d.api('POST', `/api/sessions/${id}/revive`)).status).toBe(409);
    await d.api('DELETE', `/api/sessions/${id}`);
    const revived = await d.api('POST', `/api/sessions/${id}/revive`);
    expect(revived.status).toBe(200);
    expect(revived.json.session.state).toBe('running');
    const again = await d.api('POST', '/api/chat', { sessionId: id, message: 'print("alive-" + "again")' });
    expect(again.json.response).toBe('alive-again');
  });
});
