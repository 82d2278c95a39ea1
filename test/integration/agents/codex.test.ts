import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { codexEnv, seedCodexHome } from '../../fixtures/agent-homes';
import { codexBinary } from '../../fixtures/binaries';
import { startFakeOpenAI } from '../../fixtures/fake-openai';
import { DaemonProcess } from '../../helpers/daemonProcess';
import { AgentHarness } from '../../helpers/agentHarness';
import { waitFor } from '../../helpers/wait';

/**
 * The real Codex binary, driven through the daemon against a fake OpenAI
 * Responses server on loopback: chat turns, continuity across a kill -9 of
 * the daemon (codex resume), recap, a relayed approval, the chat socket.
 */
const h = new AgentHarness('codex');
let project: string;

beforeAll(async () => {
  // on-request with a sandbox: escalated commands ask for approval.
  await h.setup(startFakeOpenAI, ({ fake, project: p, home }) => {
    const codexHome = seedCodexHome(join(home, '.codex'), { baseUrl: fake.url, projectPaths: [p], approvalPolicy: 'on-request', sandboxMode: 'workspace-write' });
    return { command: codexBinary(), env: codexEnv({ codexHome, home }) };
  });
  project = h.project;
});
afterAll(() => h.teardown());

const daemon = () => h.daemon();
const lastMainUserTexts = () => h.lastMainUserTexts();

describe('codex through the daemon', () => {
  let d: DaemonProcess;
  let sessionId: string;

  it('reports codex available with its version, without starting a session', async () => {
    d = await daemon();
    const health = (await d.api('GET', '/api/health')).json;
    expect(health.agents.codex.available).toBe(true);
    expect(health.agents.codex.version).toMatch(/0\.169\.0/);
  });

  it('answers two chat turns, the second remembering the first', async () => {
    const first = await d.api('POST', '/api/chat', { agent: 'codex', projectPath: project, message: 'Remember the word BANANA' });
    expect(first.status).toBe(200);
    expect(first.json.response).toContain('BANANA');
    sessionId = first.json.sessionId;
    const second = await d.api('POST', '/api/chat', { sessionId, message: 'Which word did I ask you to remember?' });
    expect(second.status).toBe(200);
    expect(second.json.response).toContain('BANANA');
    expect(lastMainUserTexts().join(' ')).toContain('BANANA');
    const active = (await d.api('GET', '/api/sessions/active')).json.sessions.find((s: any) => s.id === sessionId);
    expect(active.agentSessionId).toEqual(expect.any(String));
  });

  it('carries the conversation across a kill -9 of the daemon and a restart (codex resume)', async () => {
    expect(await d.kill('SIGKILL')).toBeNull();
    d = await daemon();
    expect((await d.api('GET', `/api/sessions/${sessionId}`)).json.session).toMatchObject({ state: 'exited', endReason: 'daemon_stopped' });
    const third = await d.api('POST', '/api/chat', { sessionId, message: 'And now, after the restart?' });
    expect(third.status).toBe(200);
    expect(third.json.response).toContain('BANANA');
    expect(lastMainUserTexts()).toEqual(expect.arrayContaining(['Remember the word BANANA', 'And now, after the restart?']));
  });

  it('returns the agent\'s recap on keep-alive with action recap', async () => {
    const res = await d.api('POST', '/api/sessions/keep-alive', { sessionId, action: 'recap' });
    expect(res.status).toBe(200);
    expect(res.json.recap).toEqual(expect.stringContaining('BANANA'));
  });

  it('relays an approval prompt, answers it, and completes the turn', async () => {
    const target = join(project, 'approved-file');
    const asked = await d.api('POST', '/api/chat', { sessionId, message: `PLEASE RUN: touch ${target}` });
    expect(asked.status).toBe(202);
    expect(asked.json.status).toBe('needs_input');
    expect(asked.json.prompt.options.map((o: any) => o.id)).toContain('1');
    const answered = await d.api('POST', `/api/sessions/${sessionId}/answer`, { option: '1' });
    expect(answered.status).toBe(200);
    await waitFor(() => existsSync(target), 20_000, 'the command to run');
    const turn = await waitFor(async () => {
      const messages = (await d.api('GET', `/api/sessions/${sessionId}/messages`)).json.messages;
      return messages.find((m: any) => m.turnId === asked.json.turnId && m.role === 'assistant');
    }, 30_000, 'the turn to end');
    expect(turn.status).toBe('completed');
  });

  it('ends a turn that failed on an API error as interrupted, with the error, instead of hanging', async () => {
    const res = await d.api('POST', '/api/chat', { sessionId, message: 'FAIL WITH 400 please' });
    expect(res.status).toBe(200);
    expect(res.json.status).toBe('interrupted');
    expect(res.json.response).toMatch(/400|error/i);
    const after = await d.api('POST', '/api/chat', { sessionId, message: 'Still there after the error?' });
    expect(after.json.status).toBe('completed');
    expect(after.json.response).toContain('BANANA');
  }, 60_000);

  it('round-trips a message over the chat socket', async () => {
    const ws = h.socket(d, '/api/codex/ws');
    await ws.nextJson((f) => f.type === 'ready');
    ws.send({ content: 'Hello over the socket', session_id: 'ios-codex-1', device_id: 'device-B' });
    const msg = await ws.nextJson((f) => f.type === 'message', 60_000);
    expect(msg).toMatchObject({ role: 'assistant', session_id: 'ios-codex-1' });
    expect(msg.content).toContain('Hello over the socket');
  });

  it('submits a long single line and a line with a tab exactly (as a bracketed paste, not keystrokes)', async () => {
    // Typed as keystrokes, codex took 300+ characters for a paste and never submitted them.
    let long = '';
    for (let i = 0; long.length < 1000; i++) long += `w${String(i).padStart(5, '0')} `;
    long = `${long.slice(0, 996)} END`;
    const res = await d.api('POST', '/api/chat', { sessionId, message: long });
    expect(res.json).toMatchObject({ status: 'completed' });
    expect(lastMainUserTexts()).toContain(long);
    const tabbed = await d.api('POST', '/api/chat', { sessionId, message: 'col1\tcol2 tabbed' });
    expect(tabbed.json).toMatchObject({ status: 'completed' });
    expect(lastMainUserTexts().join(' ')).toMatch(/col1\s+col2 tabbed/);
  }, 60_000);
});
