import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  claudeArgs,
  claudeHookSettings,
  claudePermissionKeys,
  claudeTranscriptExists,
  claudeTurnInterrupted,
  parseClaudeHook,
  parseClaudePermissionDialog,
  prepareClaudeRevival,
} from '../../server/agents/claude';
import {
  codexArgs,
  codexPermissionKeys,
  codexRolloutExists,
  codexTurnEnd,
  codexTurnError,
  CodexState,
  Osc7501Parser,
  Osc7501Report,
  parseCodexApproval,
  parseCodexNotify,
} from '../../server/agents/codex';
import { CODEX_NOTIFY_EVENT, HOOK_SECRET_ENV, HOOK_SESSION_ENV, HOOK_URL_ENV, hookRelayPath } from '../../server/agents/relay';
import { AgentSignal } from '../../server/agents/signals';
import { claudeEnv, codexEnv, seedClaudeHome, seedCodexHome } from '../fixtures/agent-homes';
import { AgentPty } from '../fixtures/agent-pty';
import { findClaudeBinary, findCodexBinary } from '../fixtures/binaries';
import { startFakeAnthropic } from '../fixtures/fake-anthropic';
import { FakeServer, nowMs, waitUntil } from '../fixtures/fake-model-common';
import { startFakeOpenAI } from '../fixtures/fake-openai';
import { HookReceiver, ReceivedHook, startHookReceiver } from '../fixtures/hook-receiver';
import { cleanupTmp, tmpdir } from '../helpers/tmp';

/**
 * The real claude and codex binaries, driven with node-pty directly (no
 * daemon) against fake model servers, with server/agents/* doing all the
 * agent knowledge: command lines, hooks through hook-relay.js, OSC 7501,
 * notify filtering, dialogs, revival. Also collects the figures the daemon's
 * budget depends on (spawn to ready, turn wall time vs the fake model's own).
 */

const CLAUDE = findClaudeBinary();
const CODEX = findCodexBinary();
const SECRET = `secret-${randomUUID()}`;

const figures = {
  claudeReadyMs: [] as number[],
  claudeResumeReadyMs: [] as number[],
  claudeTurns: [] as Array<{ wallMs: number; modelMs: number }>,
  claudePermissionTurns: [] as Array<{ wallMs: number; modelMs: number }>,
  claudeDialogAfterHookMs: [] as number[],
  codexReadyMs: [] as number[],
  codexResumeReadyMs: [] as number[],
  codexTurns: [] as Array<{ wallMs: number; modelMs: number }>,
  codexPermissionTurns: [] as Array<{ wallMs: number; modelMs: number }>,
  codexDialogAfterBlockedMs: [] as number[],
};

let hooks: HookReceiver;
let anthropic: FakeServer;
let openai: FakeServer;
/** A folder whose name needs quoting, holding a copy of the relay: proves claudeHookSettings (shell) and codexArgs (TOML) quote. */
let relayCopy: string;
const agents: AgentPty[] = [];

beforeAll(async () => {
  [hooks, anthropic, openai] = await Promise.all([startHookReceiver(SECRET), startFakeAnthropic(), startFakeOpenAI()]);
  const dir = join(tmpdir('relay'), `it's a "relay" $dir`);
  mkdirSync(dir);
  relayCopy = join(dir, 'hook-relay.js');
  copyFileSync(hookRelayPath(), relayCopy);
});

afterEach(async () => {
  const leftovers: number[] = [];
  for (const agent of agents.splice(0)) {
    await agent.kill();
    leftovers.push(...agent.leftovers());
  }
  expect(leftovers).toEqual([]);
});

afterAll(async () => {
  await Promise.all([hooks?.close(), anthropic?.close(), openai?.close()]);
  cleanupTmp();
  report();
});

/** The project folder and the throwaway home of one agent run. */
function workspace(name: string): { project: string; home: string } {
  const root = tmpdir(name);
  const project = join(root, 'my.project_dir');
  const home = join(root, 'home');
  mkdirSync(project);
  mkdirSync(home);
  return { project, home };
}

function relayEnv(sessionId: string): Record<string, string> {
  return { [HOOK_URL_ENV]: hooks.url, [HOOK_SECRET_ENV]: SECRET, [HOOK_SESSION_ENV]: sessionId };
}

/** The fake model's own time for the main requests that arrived after `since`. */
function modelMsSince(fake: FakeServer, since: number): number {
  return fake
    .mainRequests()
    .filter((r) => r.receivedAt >= since)
    .reduce((sum, r) => sum + (r.modelMs ?? 0), 0);
}

function lastMain(fake: FakeServer) {
  const main = fake.mainRequests();
  return main[main.length - 1];
}

// ---------------------------------------------------------------------------
// claude

interface ClaudeRun {
  agent: AgentPty;
  sessionId: string;
  /** The next hook signal of this run after the posts already seen. */
  signal(kind: AgentSignal['kind'], timeoutMs?: number): Promise<{ signal: AgentSignal; post: ReceivedHook }>;
}

function startClaude(opts: { project: string; home: string; configDir: string; uuid: string; revive: boolean; transcriptExists: boolean }): ClaudeRun {
  const sessionId = randomUUID();
  const settings = claudeHookSettings([process.execPath, relayCopy]);
  const args = claudeArgs({ agentSessionId: opts.uuid, revive: opts.revive, transcriptExists: opts.transcriptExists, hookSettingsJson: JSON.stringify(settings) });
  const env = { ...claudeEnv({ configDir: opts.configDir, home: opts.home, baseUrl: anthropic.url }), ...relayEnv(sessionId) };
  const agent = new AgentPty(CLAUDE!, args, { cwd: opts.project, env });
  agents.push(agent);
  let seen = hooks.posts.length;
  return {
    agent,
    sessionId,
    async signal(kind, timeoutMs = 15_000) {
      let signal: AgentSignal | null = null;
      const post = await hooks.next(
        (p) => p.sessionId === sessionId && (signal = parseClaudeHook(p.payload, p.event)) !== null && signal.kind === kind,
        timeoutMs,
        seen,
      ).catch((err) => {
        throw new Error(`${(err as Error).message} (${kind})\n--- screen ---\n${agent.screen()}`);
      });
      seen = hooks.posts.indexOf(post) + 1;
      return { signal: signal!, post };
    },
  };
}

/** Submits `text` and waits for the Stop hook; records the turn's figures. */
async function claudeTurn(run: ClaudeRun, text: string): Promise<string> {
  const started = await run.agent.submit(text);
  const { signal, post } = await run.signal('turn-ended');
  figures.claudeTurns.push({ wallMs: post.at - started, modelMs: modelMsSince(anthropic, started) });
  return signal.kind === 'turn-ended' ? signal.text : '';
}

const describeClaude = CLAUDE ? describe : describe.skip;

describeClaude('real claude in a PTY', () => {
  it('keeps the conversation across turns and across a kill and --resume', async () => {
    const { project, home } = workspace('claude');
    const configDir = seedClaudeHome(join(home, '.claude-config'), { projectPaths: [project] });
    const uuid = randomUUID();

    const first = startClaude({ project, home, configDir, uuid, revive: false, transcriptExists: false });
    const ready = await first.signal('ready');
    figures.claudeReadyMs.push(ready.post.at - first.agent.spawnedAt);
    expect(ready.signal).toEqual({ kind: 'ready', agentSessionId: uuid, source: 'startup' });

    expect(await claudeTurn(first, 'Remember the word BANANA')).toContain('[Remember the word BANANA]');
    const answer = await claudeTurn(first, 'Which word did I ask you to remember?');
    expect(answer).toContain('BANANA');
    expect(lastMain(anthropic).userTexts).toEqual(['Remember the word BANANA', 'Which word did I ask you to remember?']);
    expect(lastMain(anthropic).headers['x-claude-code-session-id']).toBe(uuid);
    expect(hooks.rejected).toBe(0);

    // Claude writes the first records ~0.1 s after the first Stop; wait for them like a careful daemon would.
    await waitUntil(() => claudeTranscriptExists(configDir, project, uuid), 5_000, 'the transcript');
    await first.agent.kill();
    expect((await first.signal('ended')).signal).toMatchObject({ kind: 'ended' });

    const plan = prepareClaudeRevival(configDir, project, uuid);
    expect(plan).toEqual({ transcriptExists: true });
    const revived = startClaude({ project, home, configDir, uuid, revive: true, ...plan });
    const again = await revived.signal('ready');
    figures.claudeResumeReadyMs.push(again.post.at - revived.agent.spawnedAt);
    expect(again.signal).toEqual({ kind: 'ready', agentSessionId: uuid, source: 'resume' });
    expect(await claudeTurn(revived, 'And after the restart?')).toContain('BANANA');
    expect(lastMain(anthropic).userTexts).toHaveLength(3);
  });

  it('asks permission through the PermissionRequest hook, runs on "1", and is interrupted on "3"', async () => {
    const { project, home } = workspace('claude-perm');
    const configDir = seedClaudeHome(join(home, '.claude-config'), { projectPaths: [project] });
    const run = startClaude({ project, home, configDir, uuid: randomUUID(), revive: false, transcriptExists: false });
    figures.claudeReadyMs.push((await run.signal('ready')).post.at - run.agent.spawnedAt);

    const started = await run.agent.submit('PLEASE RUN: touch approved.txt');
    const { signal, post } = await run.signal('permission');
    expect(signal).toEqual({
      kind: 'permission',
      prompt: 'Bash command\n  touch approved.txt\n  Run touch approved.txt\nDo you want to proceed?',
      options: [
        { id: '1', label: 'Yes' },
        { id: '2', label: 'Yes, and always allow access to my.project_dir/ from this project' },
        { id: '3', label: 'No' },
      ],
    });
    const dialog = await run.agent.waitForScreen(parseClaudePermissionDialog, 5_000, 'the permission dialog');
    figures.claudeDialogAfterHookMs.push(nowMs() - post.at);
    // The hook's options are the dialog's, word for word.
    expect(dialog.options).toEqual(signal.kind === 'permission' ? signal.options : []);
    expect(dialog.prompt).toContain('Do you want to proceed?');

    run.agent.write(claudePermissionKeys('1'));
    const ended = await run.signal('turn-ended');
    figures.claudePermissionTurns.push({ wallMs: ended.post.at - started, modelMs: modelMsSince(anthropic, started) });
    expect(existsSync(join(project, 'approved.txt'))).toBe(true);
    expect(ended.signal.kind === 'turn-ended' && ended.signal.text).toContain('Tool result: [(Bash completed with no output)]');

    await run.agent.submit('PLEASE RUN: touch denied.txt');
    await run.signal('permission');
    await run.agent.waitForScreen(parseClaudePermissionDialog, 5_000, 'the second permission dialog');
    run.agent.write(claudePermissionKeys('3'));
    // No hook fires for a denial: the screen is the only witness.
    await run.agent.waitForScreen(claudeTurnInterrupted, 5_000, '"Interrupted · What should Claude do instead?"');
    expect(existsSync(join(project, 'denied.txt'))).toBe(false);
    expect(hooks.posts.filter((p) => p.sessionId === run.sessionId && p.event === 'Stop')).toHaveLength(1);
  });

  it('ends a turn that fails on an API error with StopFailure, not Stop', async () => {
    const { project, home } = workspace('claude-fail');
    const configDir = seedClaudeHome(join(home, '.claude-config'), { projectPaths: [project] });
    const run = startClaude({ project, home, configDir, uuid: randomUUID(), revive: false, transcriptExists: false });
    figures.claudeReadyMs.push((await run.signal('ready')).post.at - run.agent.spawnedAt);
    await run.agent.submit('FAIL WITH 400');
    const { signal, post } = await run.signal('turn-ended');
    expect(post.event).toBe('StopFailure');
    expect(signal).toEqual({ kind: 'turn-ended', text: 'API Error: 400 fake failure 400', error: 'unknown' });
  });
});

// ---------------------------------------------------------------------------
// codex

interface CodexRun {
  agent: AgentPty;
  sessionId: string;
  reports: Array<Osc7501Report & { at: number }>;
  /** Resolves with the first report from index `from` that `match` accepts. */
  report(match: (r: Osc7501Report, previous: CodexState | null) => boolean, from: number, timeoutMs?: number): Promise<{ index: number; at: number }>;
}

function startCodex(opts: { project: string; home: string; codexHome: string; threadId?: string }): CodexRun {
  const sessionId = randomUUID();
  const parser = new Osc7501Parser();
  const reports: CodexRun['reports'] = [];
  const args = codexArgs({ threadId: opts.threadId, revive: !!opts.threadId, notifyCommand: [process.execPath, relayCopy, CODEX_NOTIFY_EVENT] });
  const env = { ...codexEnv({ codexHome: opts.codexHome, home: opts.home }), ...relayEnv(sessionId) };
  const agent = new AgentPty(CODEX!, args, { cwd: opts.project, env, onData: (chunk) => reports.push(...parser.feed(chunk).map((r) => ({ ...r, at: nowMs() }))) });
  agents.push(agent);
  return {
    agent,
    sessionId,
    reports,
    async report(match, from, timeoutMs = 15_000) {
      let index = -1;
      const test = () => {
        for (let i = from; i < reports.length; i++) {
          if (match(reports[i], i > 0 ? reports[i - 1].state : null)) return (index = i) >= 0;
        }
        return false;
      };
      await waitUntil(test, timeoutMs, 'an OSC 7501 report').catch((err) => {
        throw new Error(`${(err as Error).message}; reports: ${reports.map((r) => r.state).join(' ')}\n--- screen ---\n${agent.screen()}`);
      });
      return { index, at: reports[index].at };
    },
  };
}

/** How long codex must stay idle before input is safe: at start it sometimes blips idle → working → idle within ~50 ms. */
const CODEX_SETTLE_MS = 200;

/** Waits for the first idle report and a settled idle after it; returns the first idle's time. */
async function codexReady(run: CodexRun): Promise<number> {
  const first = await run.report((r) => r.state === 'idle', 0);
  let quietSince = nowMs();
  let count = run.reports.length;
  await waitUntil(
    () => {
      if (run.reports.length !== count) [count, quietSince] = [run.reports.length, nowMs()];
      return run.reports[count - 1].state === 'idle' && nowMs() - quietSince >= CODEX_SETTLE_MS;
    },
    10_000,
    'codex to settle idle',
  );
  return first.at;
}

/** The main thread's notify for the run, once it arrives; title side-thread notifies are skipped. */
async function codexNotify(run: CodexRun, threadId: string | null, from: number, timeoutMs = 10_000) {
  const post = await hooks.next(
    (p) => p.sessionId === run.sessionId && p.event === CODEX_NOTIFY_EVENT && typeof p.payload === 'object' && parseCodexNotify(JSON.stringify(p.payload), threadId) !== null,
    timeoutMs,
    from,
  );
  return parseCodexNotify(JSON.stringify(post.payload), threadId)!;
}

/** Submits `text`, waits for its turn to end (OSC 7501) and for the main thread's notify. */
async function codexTurn(run: CodexRun, text: string, threadId: string | null) {
  const fromReport = run.reports.length;
  const fromHook = hooks.posts.length;
  const started = await run.agent.submit(text);
  const end = await run.report((r, prev) => codexTurnEnd(prev, r.state) !== null, fromReport);
  expect(codexTurnEnd(run.reports[end.index - 1]?.state ?? null, run.reports[end.index].state)).toBe('completed');
  figures.codexTurns.push({ wallMs: end.at - started, modelMs: modelMsSince(openai, started) });
  return codexNotify(run, threadId, fromHook);
}

const describeCodex = CODEX ? describe : describe.skip;

describeCodex('real codex in a PTY', () => {
  it('keeps the thread across turns and across a kill and resume, and filters the title side-thread', async () => {
    const { project, home } = workspace('codex');
    const codexHome = seedCodexHome(join(home, '.codex-home'), { baseUrl: openai.url, projectPaths: [project], approvalPolicy: 'on-request', sandboxMode: 'workspace-write' });

    const first = startCodex({ project, home, codexHome });
    figures.codexReadyMs.push((await codexReady(first)) - first.agent.spawnedAt);

    const one = await codexTurn(first, 'Remember the word BANANA', null);
    expect(one.text).toContain('[Remember the word BANANA]');
    const threadId = one.threadId;
    const two = await codexTurn(first, 'Which word did I ask you to remember?', threadId);
    expect(two.text).toContain('BANANA');
    expect(two.inputMessages).toEqual(['Remember the word BANANA', 'Which word did I ask you to remember?']);
    expect(lastMain(openai).headers['thread-id']).toBe(threadId);

    // The title side-thread notified too, under other thread ids, and is filtered out.
    await waitUntil(() => openai.requests.filter((r) => r.kind === 'title').length >= 2, 5_000, 'the title requests');
    const titleThreads = openai.requests.filter((r) => r.kind === 'title').map((r) => String(r.headers['thread-id']));
    expect(titleThreads).not.toContain(threadId);
    const notifies = hooks.posts.filter((p) => p.sessionId === first.sessionId && p.event === CODEX_NOTIFY_EVENT);
    const titleNotifies = notifies.filter((p) => titleThreads.includes((p.payload as Record<string, string>)['thread-id']));
    for (const p of titleNotifies) {
      expect(parseCodexNotify(JSON.stringify(p.payload), null)).toBeNull();
      expect(codexRolloutExists(codexHome, (p.payload as Record<string, string>)['thread-id'])).toBe(false);
    }
    expect(codexRolloutExists(codexHome, threadId)).toBe(true);

    await first.agent.kill('SIGKILL');
    const revived = startCodex({ project, home, codexHome, threadId });
    figures.codexResumeReadyMs.push((await codexReady(revived)) - revived.agent.spawnedAt);
    const three = await codexTurn(revived, 'And after the restart?', threadId);
    expect(three.text).toContain('BANANA');
    expect(lastMain(openai).userTexts).toEqual(['Remember the word BANANA', 'Which word did I ask you to remember?', 'And after the restart?']);
  });

  it('reports blocked on an approval, runs on "1", and is interrupted on "3"', async () => {
    const { project, home } = workspace('codex-perm');
    const codexHome = seedCodexHome(join(home, '.codex-home'), { baseUrl: openai.url, projectPaths: [project], approvalPolicy: 'on-request', sandboxMode: 'workspace-write' });
    const run = startCodex({ project, home, codexHome });
    figures.codexReadyMs.push((await codexReady(run)) - run.agent.spawnedAt);

    let from = run.reports.length;
    const fromHook = hooks.posts.length;
    const started = await run.agent.submit('PLEASE RUN: touch approved.txt');
    const blocked = await run.report((r) => r.state === 'blocked', from);
    expect(run.reports[blocked.index]).toMatchObject({ state: 'blocked', kind: 'permission' });
    const dialog = await run.agent.waitForScreen(parseCodexApproval, 5_000, 'the approval dialog');
    figures.codexDialogAfterBlockedMs.push(nowMs() - blocked.at);
    expect(dialog.prompt).toContain('Would you like to run the following command?');
    expect(dialog.prompt).toContain('$ touch approved.txt');
    expect(dialog.options).toEqual([
      { id: '1', label: 'Yes, proceed' },
      { id: '2', label: "Yes, and don't ask again for commands that start with `touch approved.txt`" },
      { id: '3', label: 'No, and tell Codex what to do differently' },
    ]);

    run.agent.write(codexPermissionKeys('1'));
    const done = await run.report((r, prev) => codexTurnEnd(prev, r.state) !== null, blocked.index + 1);
    expect(run.reports[done.index].state).toBe('done');
    figures.codexPermissionTurns.push({ wallMs: done.at - started, modelMs: modelMsSince(openai, started) });
    expect(existsSync(join(project, 'approved.txt'))).toBe(true);
    expect((await codexNotify(run, null, fromHook)).text).toContain('Tool result:');

    from = run.reports.length;
    await run.agent.submit('PLEASE RUN: touch denied.txt');
    const blockedAgain = await run.report((r) => r.state === 'blocked', from);
    await run.agent.waitForScreen(parseCodexApproval, 5_000, 'the second approval dialog');
    run.agent.write(codexPermissionKeys('3'));
    const end = await run.report((r, prev) => codexTurnEnd(prev, r.state) !== null, blockedAgain.index + 1);
    expect(codexTurnEnd(run.reports[end.index - 1].state, run.reports[end.index].state)).toBe('interrupted');
    expect(existsSync(join(project, 'denied.txt'))).toBe(false);
  });

  it('shows an API error on screen while OSC 7501 stays at working', async () => {
    const { project, home } = workspace('codex-fail');
    const codexHome = seedCodexHome(join(home, '.codex-home'), { baseUrl: openai.url, projectPaths: [project] });
    const run = startCodex({ project, home, codexHome });
    figures.codexReadyMs.push((await codexReady(run)) - run.agent.spawnedAt);
    const from = run.reports.length;
    await run.agent.submit('FAIL WITH 400');
    const error = await run.agent.waitForScreen(codexTurnError, 10_000, 'the error line');
    expect(error).toContain('fake failure 400');
    // codex 0.169 reports no idle or done after an API error: the screen is the only way to end this turn.
    expect(run.reports.slice(from).map((r) => r.state)).toEqual(['working']);
  });
});

// ---------------------------------------------------------------------------

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return Math.round(s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2);
}

function report(): void {
  const turns = (t: Array<{ wallMs: number; modelMs: number }>) =>
    `median wall ${median(t.map((x) => x.wallMs))} ms, fake model ${median(t.map((x) => x.modelMs))} ms, overhead ${median(t.map((x) => x.wallMs - x.modelMs))} ms (n=${t.length})`;
  const lines = [
    `claude spawn→SessionStart: median ${median(figures.claudeReadyMs)} ms ${JSON.stringify(figures.claudeReadyMs.map(Math.round))}; resume ${JSON.stringify(figures.claudeResumeReadyMs.map(Math.round))}`,
    `claude turn (Enter→Stop hook): ${turns(figures.claudeTurns)}`,
    `claude permission dialog drawn after PermissionRequest: ${JSON.stringify(figures.claudeDialogAfterHookMs.map(Math.round))} ms; approved turn (Enter→Stop, incl. the wait for the dialog): ${turns(figures.claudePermissionTurns)}`,
    `codex spawn→first OSC idle: median ${median(figures.codexReadyMs)} ms ${JSON.stringify(figures.codexReadyMs.map(Math.round))}; resume ${JSON.stringify(figures.codexResumeReadyMs.map(Math.round))}`,
    `codex turn (Enter→OSC done): ${turns(figures.codexTurns)}`,
    `codex approval dialog drawn after OSC blocked: ${JSON.stringify(figures.codexDialogAfterBlockedMs.map(Math.round))} ms; approved turn (Enter→done, incl. the wait for the dialog): ${turns(figures.codexPermissionTurns)}`,
  ];
  if (process.env.AGENTD_FIGURES !== '0') process.stdout.write(`\nreal-clis figures:\n  ${lines.join('\n  ')}\n`);
}
