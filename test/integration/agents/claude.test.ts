import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { claudeEnv, seedClaudeHome } from '../../fixtures/agent-homes';
import { claudeBinary } from '../../fixtures/binaries';
import { startFakeAnthropic } from '../../fixtures/fake-anthropic';
import { DaemonProcess } from '../../helpers/daemonProcess';
import { AgentHarness } from '../../helpers/agentHarness';
import { waitFor } from '../../helpers/wait';

/**
 * The real Claude Code binary, driven through the daemon against a fake
 * Anthropic server on loopback: chat turns, continuity across a kill -9 of
 * the daemon, recap, a relayed permission prompt, the chat socket.
 */
const h = new AgentHarness('claude');
let project: string;

beforeAll(async () => {
  await h.setup(startFakeAnthropic, ({ fake, project: p, home }) => {
    const configDir = seedClaudeHome(join(home, '.claude-config'), { projectPaths: [p] });
    return { command: claudeBinary(), env: claudeEnv({ configDir, home, baseUrl: fake.url }) };
  });
  project = h.project;
});
afterAll(() => h.teardown());

const daemon = () => h.daemon();
const lastMainUserTexts = () => h.lastMainUserTexts();

describe('claude through the daemon', () => {
  let d: DaemonProcess;
  let sessionId: string;

  it('reports claude available with its version, without starting a session', async () => {
    d = await daemon();
    const health = (await d.api('GET', '/api/health')).json;
    expect(health.agents.claude.available).toBe(true);
    expect(health.agents.claude.version).toMatch(/2\.1\.197/);
    expect(health.sessions.total).toBe(0);
  });

  it('answers two chat turns, the second remembering the first', async () => {
    const first = await d.api('POST', '/api/chat', { agent: 'claude', projectPath: project, message: 'Remember the word BANANA' });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ sessionId: expect.any(String), turnId: expect.any(String) });
    expect(first.json.response).toContain('BANANA');
    sessionId = first.json.sessionId;
    const second = await d.api('POST', '/api/chat', { sessionId, message: 'Which word did I ask you to remember?' });
    expect(second.status).toBe(200);
    expect(second.json.response).toContain('BANANA');
    expect(lastMainUserTexts().join(' ')).toContain('BANANA');
    const active = (await d.api('GET', '/api/sessions/active')).json.sessions.find((s: any) => s.id === sessionId);
    expect(active.agentSessionId).toMatch(/^[0-9a-f-]{36}$/);
    const messages = (await d.api('GET', `/api/sessions/${sessionId}/messages`)).json.messages;
    expect(messages.filter((m: any) => m.role === 'user').map((m: any) => m.content)).toEqual(['Remember the word BANANA', 'Which word did I ask you to remember?']);
    expect((await d.api('GET', `/api/sessions/${sessionId}`)).json.session.state).toBe('idle');
  });

  it('carries the conversation across a kill -9 of the daemon and a restart (claude --resume)', async () => {
    expect(await d.kill('SIGKILL')).toBeNull();
    d = await daemon();
    const listed = (await d.api('GET', `/api/sessions/${sessionId}`)).json.session;
    expect(listed).toMatchObject({ state: 'exited', endReason: 'daemon_stopped' });
    const third = await d.api('POST', '/api/chat', { sessionId, message: 'And now, after the restart?' });
    expect(third.status).toBe(200);
    expect(third.json.response).toContain('BANANA');
    expect(lastMainUserTexts()).toEqual(expect.arrayContaining(['Remember the word BANANA', 'And now, after the restart?']));
  });

  it('returns the agent\'s recap on keep-alive with action recap', async () => {
    const res = await d.api('POST', '/api/sessions/keep-alive', { sessionId, action: 'recap' });
    expect(res.status).toBe(200);
    expect(res.json.recap).toEqual(expect.stringContaining('BANANA'));
    expect(res.json.recap).not.toMatch(/\x1b/);
  });

  it('relays a permission prompt, answers it, and completes the turn', async () => {
    const target = join(project, 'permitted-file');
    const asked = await d.api('POST', '/api/chat', { sessionId, message: `PLEASE RUN: touch ${target}` });
    expect(asked.status).toBe(202);
    expect(asked.json.status).toBe('needs_input');
    expect(asked.json.prompt.options.map((o: any) => o.id)).toContain('1');
    expect(asked.json.prompt.prompt).toContain('touch');
    const session = (await d.api('GET', `/api/sessions/${sessionId}`)).json.session;
    expect(session.state).toBe('needs_input');
    expect(session.prompt.turnId).toBe(asked.json.turnId);
    const answered = await d.api('POST', `/api/sessions/${sessionId}/answer`, { option: '1' });
    expect(answered.status).toBe(200);
    await waitFor(() => existsSync(target), 20_000, 'the tool to run');
    const turn = await waitFor(async () => {
      const messages = (await d.api('GET', `/api/sessions/${sessionId}/messages`)).json.messages;
      return messages.find((m: any) => m.turnId === asked.json.turnId && m.role === 'assistant');
    }, 20_000, 'the turn to end');
    expect(turn.status).toBe('completed');
    expect((await d.api('POST', `/api/sessions/${sessionId}/answer`, { option: '1' })).status).toBe(409);
  });

  it('ends a turn whose permission was denied as interrupted (claude fires no hook then), telling terminal clients', async () => {
    const term = h.socket(d, `/api/sessions/${sessionId}/ws`);
    await term.nextJson((f) => f.type === 'snapshot');
    const asked = await d.api('POST', '/api/chat', { sessionId, message: `PLEASE RUN: touch ${join(project, 'denied-file')}` });
    expect(asked.json.status).toBe('needs_input');
    const frame = await term.nextJson((f) => f.type === 'permission');
    expect(frame.turnId).toBe(asked.json.turnId);
    const no = asked.json.prompt.options.find((o: any) => /^No/.test(o.label));
    expect((await d.api('POST', `/api/sessions/${sessionId}/answer`, { option: no.id })).status).toBe(200);
    const turn = await term.nextJson((f) => f.type === 'turn' && f.turnId === asked.json.turnId, 15_000);
    expect(turn.status).toBe('interrupted');
    expect(existsSync(join(project, 'denied-file'))).toBe(false);
    expect((await d.api('GET', `/api/sessions/${sessionId}`)).json.session.state).toBe('idle');
  });

  it('sends chat messages that look like commands to the model: /help opens no dialog, ! runs no shell', async () => {
    const target = join(project, 'bang-file');
    for (const message of ['/help', `!touch ${target}`, '/clear']) {
      const res = await d.api('POST', '/api/chat', { sessionId, message });
      expect(res.json).toMatchObject({ status: 'completed' });
      expect(res.json.response).toContain(message);
    }
    expect(existsSync(target)).toBe(false);
    const after = await d.api('POST', '/api/chat', { sessionId, message: 'Still answering after those?' });
    expect(after.json).toMatchObject({ status: 'completed' });
    expect(lastMainUserTexts().join(' ')).toContain('Still answering after those?');
  }, 60_000);

  it('ends a turn that failed on an API error as interrupted, with the error, instead of hanging', async () => {
    const res = await d.api('POST', '/api/chat', { sessionId, message: 'FAIL WITH 400 please' });
    expect(res.status).toBe(200);
    expect(res.json.status).toBe('interrupted');
    expect(res.json.response).toMatch(/400|error/i);
    const after = await d.api('POST', '/api/chat', { sessionId, message: 'Still there after the error?' });
    expect(after.json.status).toBe('completed');
    expect(after.json.response).toContain('BANANA');
  }, 60_000);

  it('answers a chat frame that is JSON but not an object, or binary, with an error frame, creating nothing', async () => {
    const before = (await d.api('GET', '/api/sessions')).json.count;
    const ws = h.socket(d, '/api/claude/ws');
    await ws.nextJson((f) => f.type === 'ready');
    for (const raw of ['null', '1', '[]', '"hi"']) {
      ws.ws.send(raw);
      const err = await ws.nextJson((f) => f.type === 'error' && !f.seen);
      err.seen = true;
      expect(err).toMatchObject({ code: 'invalid_request', message: 'frame must be a JSON object' });
    }
    ws.sendBytes(JSON.stringify({ content: 'as bytes', session_id: 'binary-chat' }));
    expect(await ws.nextJson((f) => f.type === 'error' && !f.seen)).toMatchObject({ code: 'invalid_request', message: 'chat frames are JSON text' });
    expect((await d.api('GET', '/api/sessions')).json.count).toBe(before);
    ws.ws.terminate();
  });

  it('round-trips a message over the chat socket', async () => {
    const ws = h.socket(d, '/api/claude/ws');
    await ws.nextJson((f) => f.type === 'ready');
    ws.send({ content: 'Hello over the socket', session_id: 'ios-chat-1', device_id: 'device-A' });
    const msg = await ws.nextJson((f) => f.type === 'message', 60_000);
    expect(msg).toMatchObject({ role: 'assistant', session_id: 'ios-chat-1', turnId: expect.any(String) });
    expect(msg.content).toContain('Hello over the socket');
    // A new session: its message waits for claude's start-up, and the session goes from busy to idle only at the end.
    const states = ws.json().filter((f) => f.type === 'state' && f.session_id === 'ios-chat-1').map((f) => f.state);
    expect(states[0]).toBe('busy');
    await ws.nextJson((f) => f.type === 'state' && f.state === 'idle');
    const after = ws.json().filter((f) => f.type === 'state' && f.session_id === 'ios-chat-1').map((f) => f.state);
    expect(after.indexOf('idle')).toBe(after.length - 1);
    const session = (await d.api('GET', '/api/sessions/ios-chat-1')).json.session;
    expect(session.agent).toBe('claude');

    // An idle session: one busy frame for the new turn, carrying its id.
    const seen = ws.json().length;
    ws.send({ content: 'And once more', session_id: 'ios-chat-1' });
    const second = await ws.nextJson((f) => f.type === 'message' && f.content.includes('And once more'), 60_000);
    const busy = ws.json().slice(seen).filter((f) => f.type === 'state' && f.state === 'busy');
    expect(busy).toEqual([{ type: 'state', state: 'busy', session_id: 'ios-chat-1', turnId: second.turnId }]);
  });
});
