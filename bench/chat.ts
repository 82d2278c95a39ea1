/**
 * Chat turns and agent start-up through the daemon, against the same real
 * CLI driven directly in a PTY (no daemon), both talking to a fake model on
 * loopback.
 *
 *   npx tsc -p . && node dist/bench/chat.js            (claude and codex, ~2 min)
 *   node dist/bench/chat.js codex                      (one agent)
 *   node dist/bench/run.js chat                        (through the bench runner)
 *
 * Knobs (environment): CHAT_BENCH_TURNS (measured turns per mode, 15),
 * CHAT_BENCH_WARMUP (2), CHAT_BENCH_STARTS (start samples per mode before
 * the turn sessions, 6), CHAT_BENCH_GAP_MS (400), CHAT_BENCH_WHAT_IF=0 to
 * skip claude's third reference (the daemon's hooks without UserPromptSubmit,
 * which claude waits for before sending the prompt and the daemon ignores).
 *
 * Per agent: one fake model server, one daemon (`node dist/server/main.js`
 * in a child process, its own temp DATA_DIR, as users run it) and the
 * direct reference (test/fixtures/agent-pty.ts, hook-receiver.ts).
 *
 * 1. Start to ready, alternating daemon and direct: daemon = `POST
 *    /api/sessions` until a `state: idle` frame on the session's terminal
 *    socket (attached right after the 201; the `attached` frame carries the
 *    state at attach time); direct = spawn until the SessionStart hook
 *    (claude) or until the OSC 7501 `idle` report that then stays put for
 *    the daemon's settle time (codex; the time of that report, not of the
 *    end of the settle wait).
 * 2. Chat turns, after warm-up turns, alternating daemon and direct: daemon =
 *    `POST /api/chat` until its 200 answer; direct = text, 150 ms, "\r" until
 *    the Stop hook (claude) or until both OSC 7501 `done` and the main
 *    thread's notify (codex: the daemon waits for both too). From each the
 *    fake model's own time (`modelMs` of the main requests received in the
 *    window) is subtracted: what is left is overhead beyond the model.
 *
 * Every process started carries CHAT_BENCH_TAG=<uuid> (the daemon passes its
 * environment on to its agents); whatever carries it at the end is killed by
 * pid.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { claudeArgs, claudeHookSettings, parseClaudeHook } from '../server/agents/claude';
import { codexArgs, codexTurnEnd, CodexState, Osc7501Parser, parseCodexNotify } from '../server/agents/codex';
import { CODEX_NOTIFY_EVENT, codexNotifyCommand, HOOK_SECRET_ENV, HOOK_SESSION_ENV, HOOK_URL_ENV, hookRelayCommand } from '../server/agents/relay';
import { AgentProfile, childEnv } from '../server/agents/profiles';
import { ProcessTable, readProc } from '../server/pty/processes';
import { ENTER_PAUSE_MS } from '../server/sessions/Conversation';
import { claudeEnv, codexEnv, seedClaudeHome, seedCodexHome } from '../test/fixtures/agent-homes';
import { AgentPty } from '../test/fixtures/agent-pty';
import { findClaudeBinary, findCodexBinary } from '../test/fixtures/binaries';
import { startFakeAnthropic } from '../test/fixtures/fake-anthropic';
import { FakeServer, nowMs } from '../test/fixtures/fake-model-common';
import { startFakeOpenAI } from '../test/fixtures/fake-openai';
import { HookReceiver, startHookReceiver } from '../test/fixtures/hook-receiver';

type AgentName = 'claude' | 'codex';

/** Measured turns per mode (after the warm-ups). */
const TURNS = intEnv('CHAT_BENCH_TURNS', 15);
/** Warm-up turns per mode, not counted. */
const WARMUP_TURNS = intEnv('CHAT_BENCH_WARMUP', 2);
/** Start-to-ready samples per mode (the sessions used for the turns count as one more). */
const STARTS = intEnv('CHAT_BENCH_STARTS', 6);
/** Pause between two measured operations, so the previous one's after-work (transcripts, titles) is done. */
const GAP_MS = intEnv('CHAT_BENCH_GAP_MS', 400);
/**
 * The daemon's codex settle time (server/sessions/drivers.ts CODEX_SETTLE_MS, not exported: keep in
 * step): the direct reference picks its ready report by the same rule.
 */
const CODEX_SETTLE_MS = 300;
const TAG_ENV = 'CHAT_BENCH_TAG';
/** Claude: also time a direct reference without the UserPromptSubmit hook (CHAT_BENCH_WHAT_IF=0 to skip). */
const WHAT_IF = process.env.CHAT_BENCH_WHAT_IF !== '0';
const MAIN = join(__dirname, '..', 'server', 'main.js');

function intEnv(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v >= 0 && process.env[name] !== '' && process.env[name] !== undefined ? Math.floor(v) : fallback;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ── statistics ───────────────────────────────────────────────────────────

function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile. */
function pct(xs: readonly number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

const r0 = (n: number) => Math.round(n);

interface Stat {
  n: number;
  median: number;
  p90: number;
  min: number;
  max: number;
}

function stat(xs: readonly number[]): Stat {
  return { n: xs.length, median: r0(median(xs)), p90: r0(pct(xs, 90)), min: r0(Math.min(...xs)), max: r0(Math.max(...xs)) };
}

// ── helpers ──────────────────────────────────────────────────────────────

async function waitUntil<T>(check: () => T | null | undefined | false, ms: number, what: string, everyMs = 5): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

const tmpMade: string[] = [];
function tmp(name: string): string {
  const dir = realpathSync(mkdtempSync(join(os.tmpdir(), `agentd-bench-chat-${name}-`)));
  tmpMade.push(dir);
  return dir;
}

/** The fake model's own time for the main requests received in [from, to]. */
function modelMsIn(fake: FakeServer, from: number, to: number): number {
  return fake
    .mainRequests()
    .filter((r) => r.receivedAt >= from && r.receivedAt <= to)
    .reduce((sum, r) => sum + (r.modelMs ?? 0), 0);
}

// ── the daemon in a child process (as test/helpers/daemonProcess.ts) ─────

interface Daemon {
  pid: number;
  base: string;
  token: string;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Epoch ms (1 ms resolution) of the daemon's log line `msg` for `sessionId`, if it logged one. */
  loggedAt(msg: string, sessionId: string): number | undefined;
  stop(): Promise<void>;
}

/** Daemon log lines the bench times phases with. */
const TIMED_MESSAGES = new Set(['agent started', 'session created']);

async function startDaemon(opts: { agent: AgentName; command: string; env: Record<string, string>; root: string; tag: string }): Promise<Daemon> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npx tsc -p ." first`);
  const dataDir = tmp(`${opts.agent}-data`);
  const configFile = join(dataDir, 'bench-config.json');
  writeFileSync(configFile, JSON.stringify({ agents: { [opts.agent]: { command: opts.command, env: opts.env } } }));
  let out = '';
  let partial = '';
  const logged = new Map<string, number>();
  const child: ChildProcess = spawn(process.execPath, [MAIN], {
    env: {
      ...process.env,
      [TAG_ENV]: opts.tag,
      DATA_DIR: dataDir,
      PORT: '0',
      HOST: '127.0.0.1',
      ALLOWED_ROOTS: opts.root,
      CONFIG_FILE: configFile,
      API_TOKEN: '',
      CHAT_WAIT_SECONDS: '60',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Drained (a full pipe would stall the daemon's logger); the tail is kept for errors.
  const keep = (d: Buffer) => (out = (out + d.toString('utf8')).slice(-20_000));
  child.stdout!.on('data', (d: Buffer) => {
    keep(d);
    const lines = (partial + d.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.includes('"sessionId"')) continue;
      try {
        const rec = JSON.parse(line) as { msg?: string; sessionId?: string; time?: string };
        if (rec.msg && TIMED_MESSAGES.has(rec.msg) && rec.sessionId && rec.time) logged.set(`${rec.msg}|${rec.sessionId}`, Date.parse(rec.time));
      } catch {
        // Not a JSON log line.
      }
    }
  });
  child.stderr!.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.on('exit', () => ((exited = true), resolve())));
  const portFile = join(dataDir, 'agentd.port');
  await waitUntil(() => existsSync(portFile) || exited, 20_000, 'the daemon to listen', 20);
  if (exited) throw new Error(`daemon exited at start: ${out}`);
  const port = Number(readFileSync(portFile, 'utf8').trim());
  const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  const base = `http://127.0.0.1:${port}`;
  return {
    pid: child.pid!,
    base,
    token,
    async api(method, path, body) {
      const res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    },
    loggedAt: (msg, sessionId) => logged.get(`${msg}|${sessionId}`),
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!exited) child.kill('SIGKILL');
      }, 15_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

/** Creates a session and resolves with its id once its state is `idle`, timed from the request. */
async function daemonStart(d: Daemon, agent: AgentName, projectPath: string): Promise<{ id: string; readyMs: number; createMs: number; spawnMs: number | null }> {
  const t0 = nowMs();
  const res = await d.api('POST', '/api/sessions', { agent, projectPath });
  const createMs = nowMs() - t0;
  if (res.status !== 201) throw new Error(`create ${agent}: ${res.status} ${JSON.stringify(res.json)}`);
  const id: string = res.json.session.id;
  const ws = new WebSocket(`${d.base.replace('http', 'ws')}/api/sessions/${encodeURIComponent(id)}/ws`, {
    headers: { authorization: `Bearer ${d.token}` },
    perMessageDeflate: false,
  });
  try {
    const readyAt = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${agent} session ${id} did not become idle in 30 s`)), 30_000);
      ws.on('message', (data: Buffer, binary: boolean) => {
        if (binary) return;
        const at = nowMs();
        const f = JSON.parse(data.toString('utf8')) as { type: string; state?: string; session?: { state: string } };
        const state = f.type === 'state' ? f.state : f.type === 'attached' ? f.session?.state : undefined;
        if (state === 'idle') {
          clearTimeout(timer);
          resolve(at);
        } else if (state && state !== 'starting') {
          clearTimeout(timer);
          reject(new Error(`${agent} session ${id} went ${state} while starting`));
        }
      });
      ws.on('error', (err) => reject(err));
    });
    // The log line is written just after the spawn; give the pipe a moment to deliver it.
    const spawned = await waitUntil(() => d.loggedAt('agent started', id), 1_000, 'the daemon log line').catch(() => undefined);
    return { id, readyMs: readyAt - t0, createMs, spawnMs: spawned === undefined ? null : spawned - t0 };
  } finally {
    ws.terminate();
  }
}

async function daemonTurn(d: Daemon, fake: FakeServer, sessionId: string, message: string): Promise<TurnSample> {
  const t0 = nowMs();
  const res = await d.api('POST', '/api/chat', { sessionId, message });
  const t1 = nowMs();
  if (res.status !== 200 || res.json.status !== 'completed') throw new Error(`chat: ${res.status} ${JSON.stringify(res.json)}`);
  if (!String(res.json.response).includes(message)) throw new Error(`chat answer does not name the message: ${res.json.response}`);
  const modelMs = modelMsIn(fake, t0, t1);
  return { wallMs: t1 - t0, modelMs, overheadMs: t1 - t0 - modelMs };
}

// ── the direct reference: the CLI in node-pty, no daemon ─────────────────

interface TurnSample {
  wallMs: number;
  modelMs: number;
  overheadMs: number;
  /** Direct only. Claude: Enter to the first main request reaching the fake. Codex: notify's arrival − OSC done (the daemon waits for both). */
  detailMs?: number;
}

interface DirectAgent {
  agent: AgentPty;
  /** Spawn to ready (SessionStart / settled idle report), ms. */
  ready(): Promise<number>;
  turn(message: string): Promise<TurnSample>;
}

function relayEnv(hooks: HookReceiver, secret: string, sessionId: string): Record<string, string> {
  return { [HOOK_URL_ENV]: hooks.url, [HOOK_SECRET_ENV]: secret, [HOOK_SESSION_ENV]: sessionId };
}

/** The environment the daemon would give an agent with this profile env (server/agents/profiles.ts childEnv), so both runs see the same. */
function agentEnv(profileEnv: Record<string, string>, extra: Record<string, string>): Record<string, string> {
  return childEnv(process.env, { env: profileEnv } as unknown as AgentProfile, extra);
}

interface DirectContext {
  binary: string;
  env: Record<string, string>;
  project: string;
  hooks: HookReceiver;
  secret: string;
  fake: FakeServer;
  tag: string;
  /** Claude hook events left out of the daemon's settings (the what-if reference). */
  dropHooks?: string[];
}

function directClaude(ctx: DirectContext): DirectAgent {
  const sessionId = randomUUID();
  const hookSettings = claudeHookSettings(hookRelayCommand());
  for (const event of ctx.dropHooks ?? []) delete (hookSettings.hooks as Record<string, unknown>)[event];
  const settings = JSON.stringify(hookSettings);
  const args = claudeArgs({ agentSessionId: randomUUID(), revive: false, transcriptExists: false, hookSettingsJson: settings });
  const env = agentEnv(ctx.env, { ...relayEnv(ctx.hooks, ctx.secret, sessionId), [TAG_ENV]: ctx.tag });
  const agent = new AgentPty(ctx.binary, args, { cwd: ctx.project, env });
  let seen = 0;
  const next = async (kind: 'ready' | 'turn-ended', timeoutMs: number) => {
    const post = await ctx.hooks.next((p) => p.sessionId === sessionId && parseClaudeHook(p.payload, p.event)?.kind === kind, timeoutMs, seen).catch((err) => {
      throw new Error(`${(err as Error).message} (claude ${kind})\n--- screen ---\n${agent.screen()}`);
    });
    seen = ctx.hooks.posts.indexOf(post) + 1;
    return post;
  };
  return {
    agent,
    async ready() {
      return (await next('ready', 30_000)).at - agent.spawnedAt;
    },
    async turn(message) {
      seen = ctx.hooks.posts.length;
      const t0 = nowMs();
      agent.write(message);
      await sleep(ENTER_PAUSE_MS);
      agent.write('\r');
      const enter = nowMs();
      const post = await next('turn-ended', 60_000);
      const signal = parseClaudeHook(post.payload, post.event);
      if (signal?.kind !== 'turn-ended' || !signal.text.includes(message)) throw new Error(`claude answer does not name the message: ${JSON.stringify(signal)}`);
      const modelMs = modelMsIn(ctx.fake, t0, post.at);
      const request = ctx.fake.mainRequests().find((r) => r.receivedAt >= enter);
      return { wallMs: post.at - t0, modelMs, overheadMs: post.at - t0 - modelMs, detailMs: request ? request.receivedAt - enter : undefined };
    },
  };
}

function directCodex(ctx: DirectContext): DirectAgent {
  const sessionId = randomUUID();
  const parser = new Osc7501Parser();
  const reports: Array<{ state: CodexState; at: number }> = [];
  const args = codexArgs({ revive: false, notifyCommand: codexNotifyCommand() });
  const env = agentEnv(ctx.env, { ...relayEnv(ctx.hooks, ctx.secret, sessionId), [TAG_ENV]: ctx.tag });
  const agent = new AgentPty(ctx.binary, args, {
    cwd: ctx.project,
    env,
    onData: (chunk) => {
      const at = nowMs();
      for (const r of parser.feed(chunk)) reports.push({ state: r.state, at });
    },
  });
  let threadId: string | null = null;
  return {
    agent,
    async ready() {
      // The daemon's rule: ready once an idle report has stood CODEX_SETTLE_MS with no report after it.
      const settled = await waitUntil(
        () => {
          const last = reports[reports.length - 1];
          return last && last.state === 'idle' && nowMs() - last.at >= CODEX_SETTLE_MS ? last : null;
        },
        30_000,
        'codex to report a settled idle',
      ).catch((err) => {
        throw new Error(`${(err as Error).message}; reports ${reports.map((r) => r.state).join(' ')}\n--- screen ---\n${agent.screen()}`);
      });
      return settled.at - agent.spawnedAt;
    },
    async turn(message) {
      const fromReport = reports.length;
      const fromHook = ctx.hooks.posts.length;
      const t0 = nowMs();
      agent.write(message);
      await sleep(ENTER_PAUSE_MS);
      agent.write('\r');
      const done = await waitUntil(
        () => {
          for (let i = Math.max(1, fromReport); i < reports.length; i++) {
            if (codexTurnEnd(reports[i - 1].state, reports[i].state) !== null) return { i, at: reports[i].at };
          }
          return null;
        },
        60_000,
        'codex OSC 7501 done',
      ).catch((err) => {
        throw new Error(`${(err as Error).message}\n--- screen ---\n${agent.screen()}`);
      });
      if (codexTurnEnd(reports[done.i - 1].state, reports[done.i].state) !== 'completed') throw new Error('codex turn was interrupted');
      const post = await ctx.hooks.next(
        (p) => p.sessionId === sessionId && p.event === CODEX_NOTIFY_EVENT && parseCodexNotify(JSON.stringify(p.payload), threadId) !== null,
        10_000,
        fromHook,
      );
      const notify = parseCodexNotify(JSON.stringify(post.payload), threadId)!;
      threadId ??= notify.threadId;
      if (!notify.text.includes(message)) throw new Error(`codex answer does not name the message: ${notify.text}`);
      const end = Math.max(done.at, post.at);
      const modelMs = modelMsIn(ctx.fake, t0, end);
      return { wallMs: end - t0, modelMs, overheadMs: end - t0 - modelMs, detailMs: post.at - done.at };
    },
  };
}

// ── one agent ────────────────────────────────────────────────────────────

interface AgentResult {
  agent: AgentName;
  ready: {
    daemonMs: Stat;
    directMs: Stat;
    daemonMinusDirectMs: number;
    /** Daemon phases: POST /api/sessions to its 201, and to the "agent started" log line (just after the spawn; 1 ms resolution). */
    daemonCreateMs: Stat;
    daemonSpawnMs: Stat | null;
    daemonSamples: number[];
    directSamples: number[];
  };
  turns: {
    daemon: { wallMs: Stat; modelMs: Stat; overheadMs: Stat; samples: TurnSample[] };
    direct: { wallMs: Stat; modelMs: Stat; overheadMs: Stat; detailMs: Stat | null; samples: TurnSample[] };
    /** Claude only: the direct reference with the daemon's hooks minus UserPromptSubmit (which claude waits for before it sends the prompt; the daemon ignores it). */
    directWithoutPromptHook?: { wallMs: Stat; modelMs: Stat; overheadMs: Stat; detailMs: Stat | null; samples: TurnSample[] };
    /** Median and p90 of (daemon overhead − direct overhead) over consecutive pairs; and the difference of the medians. */
    daemonMinusDirectMs: { pairedMedian: number; pairedP90: number; ofMedians: number };
  };
  seconds: number;
}

const rounded = (t: TurnSample): TurnSample => ({
  wallMs: r0(t.wallMs),
  modelMs: r0(t.modelMs),
  overheadMs: r0(t.overheadMs),
  ...(t.detailMs === undefined ? {} : { detailMs: r0(t.detailMs) }),
});

async function benchAgent(name: AgentName, log: (s: string) => void): Promise<AgentResult> {
  const t0 = Date.now();
  const binary = name === 'claude' ? findClaudeBinary() : findCodexBinary();
  if (!binary) throw new Error(`${name} is not installed (devDependency missing)`);
  const tag = randomUUID();
  const secret = `bench-${randomUUID()}`;
  const project = tmp(`${name}-project`);
  const fake = name === 'claude' ? await startFakeAnthropic() : await startFakeOpenAI();
  const hooks = await startHookReceiver(secret);
  // Separate homes for the daemon's agents and the direct ones, seeded alike.
  const envFor = (who: string): Record<string, string> => {
    const home = tmp(`${name}-${who}-home`);
    if (name === 'claude') {
      const configDir = seedClaudeHome(join(home, '.claude-config'), { projectPaths: [project] });
      return claudeEnv({ configDir, home, baseUrl: fake.url });
    }
    const codexHome = seedCodexHome(join(home, '.codex'), { baseUrl: fake.url, projectPaths: [project] });
    return codexEnv({ codexHome, home });
  };
  const daemonEnv = { ...envFor('daemon'), [TAG_ENV]: tag };
  const directEnv = envFor('direct');
  const direct = (dropHooks?: string[]) => (name === 'claude' ? directClaude : directCodex)({ binary, env: directEnv, project, hooks, secret, fake, tag, dropHooks });
  const directs: AgentPty[] = [];
  let d: Daemon | null = null;
  try {
    d = await startDaemon({ agent: name, command: binary, env: daemonEnv, root: project, tag });
    log(`${name}: daemon pid ${d.pid} at ${d.base}`);

    // 1. start to ready, alternating (which goes first alternates too)
    const readyDaemon: number[] = [];
    const readyDirect: number[] = [];
    const createMs: number[] = [];
    const spawnMs: number[] = [];
    const oneDaemonStart = async (keep: boolean) => {
      const s = await daemonStart(d!, name, project);
      readyDaemon.push(s.readyMs);
      createMs.push(s.createMs);
      if (s.spawnMs !== null) spawnMs.push(s.spawnMs);
      if (!keep) await d!.api('DELETE', `/api/sessions/${s.id}`);
      return s.id;
    };
    const oneDirectStart = async (keep: boolean) => {
      const a = direct();
      directs.push(a.agent);
      readyDirect.push(await a.ready());
      if (!keep) {
        await a.agent.kill();
        directs.splice(directs.indexOf(a.agent), 1);
      }
      return a;
    };
    for (let i = 0; i < STARTS; i++) {
      if (i % 2 === 0) {
        await oneDaemonStart(false);
        await sleep(GAP_MS);
        await oneDirectStart(false);
      } else {
        await oneDirectStart(false);
        await sleep(GAP_MS);
        await oneDaemonStart(false);
      }
      await sleep(GAP_MS);
    }
    // The sessions for the turns: their starts count as samples too.
    const sessionId = await oneDaemonStart(true);
    await sleep(GAP_MS);
    const ref = await oneDirectStart(true);
    // Claude: a what-if reference without the UserPromptSubmit hook (not counted in the ready figures).
    let refNoPromptHook: DirectAgent | null = null;
    if (name === 'claude' && WHAT_IF) {
      await sleep(GAP_MS);
      refNoPromptHook = direct(['UserPromptSubmit']);
      directs.push(refNoPromptHook.agent);
      await refNoPromptHook.ready();
    }
    log(`${name}: ready daemon ${readyDaemon.map(r0).join(' ')} ms (POST→201 ${createMs.map(r0).join(' ')}; →spawned ${spawnMs.map(r0).join(' ')}); direct ${readyDirect.map(r0).join(' ')} ms`);

    // 2. chat turns, alternating; warm-ups first
    const daemonTurns: TurnSample[] = [];
    const directTurns: TurnSample[] = [];
    const whatIfTurns: TurnSample[] = [];
    const modes: Array<{ turn: (m: string) => Promise<TurnSample>; into: TurnSample[] }> = [
      { turn: (m) => daemonTurn(d!, fake, sessionId, m), into: daemonTurns },
      { turn: (m) => ref.turn(m), into: directTurns },
    ];
    if (refNoPromptHook) modes.push({ turn: (m) => refNoPromptHook!.turn(m), into: whatIfTurns });
    let n = 0;
    const message = () => `bench turn ${++n} ${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < WARMUP_TURNS + TURNS; i++) {
      const warm = i < WARMUP_TURNS;
      // Rotate which mode goes first, so none always follows the same one.
      for (let k = 0; k < modes.length; k++) {
        const mode = modes[(i + k) % modes.length];
        await sleep(GAP_MS);
        const t = await mode.turn(message());
        if (!warm) mode.into.push(t);
      }
    }
    const list = (xs: TurnSample[]) => xs.map((t) => r0(t.overheadMs)).join(' ');
    log(`${name}: turn overhead daemon ${list(daemonTurns)} ms; direct ${list(directTurns)} ms${whatIfTurns.length ? `; direct without UserPromptSubmit ${list(whatIfTurns)} ms` : ''}`);

    const paired = daemonTurns.map((t, i) => t.overheadMs - directTurns[i].overheadMs);
    const side = (xs: TurnSample[]) => {
      const details = xs.filter((t) => t.detailMs !== undefined).map((t) => t.detailMs!);
      return {
        wallMs: stat(xs.map((t) => t.wallMs)),
        modelMs: stat(xs.map((t) => t.modelMs)),
        overheadMs: stat(xs.map((t) => t.overheadMs)),
        detailMs: details.length ? stat(details) : null,
        samples: xs.map(rounded),
      };
    };
    return {
      agent: name,
      ready: {
        daemonMs: stat(readyDaemon),
        directMs: stat(readyDirect),
        daemonMinusDirectMs: r0(median(readyDaemon) - median(readyDirect)),
        daemonCreateMs: stat(createMs),
        daemonSpawnMs: spawnMs.length ? stat(spawnMs) : null,
        daemonSamples: readyDaemon.map(r0),
        directSamples: readyDirect.map(r0),
      },
      turns: {
        daemon: side(daemonTurns),
        direct: side(directTurns),
        ...(whatIfTurns.length ? { directWithoutPromptHook: side(whatIfTurns) } : {}),
        daemonMinusDirectMs: {
          pairedMedian: r0(median(paired)),
          pairedP90: r0(pct(paired, 90)),
          ofMedians: r0(median(daemonTurns.map((t) => t.overheadMs)) - median(directTurns.map((t) => t.overheadMs))),
        },
      },
      seconds: Math.round((Date.now() - t0) / 100) / 10,
    };
  } finally {
    for (const a of directs) await a.kill().catch(() => undefined);
    await d?.stop().catch(() => undefined);
    await Promise.all([fake.close(), hooks.close()]);
    killTagged(tag, log);
  }
}

/** Kills, by pid, anything still carrying this run's tag (agents the daemon or the bench started). */
function killTagged(tag: string, log: (s: string) => void): void {
  const left = new ProcessTable().tagged(TAG_ENV, tag).filter((pid) => pid !== process.pid && readProc(pid)?.state !== 'Z');
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
  }
  if (left.length) log(`killed ${left.length} leftover process(es): ${left.join(' ')}`);
}

// ── entry points ─────────────────────────────────────────────────────────

export async function run(agents: AgentName[] = ['claude', 'codex']): Promise<Record<string, unknown>> {
  const log = (s: string) => process.stderr.write(`[chat] ${s}\n`);
  const results: Record<string, unknown> = {
    method: {
      daemon: 'node dist/server/main.js in a child process, one per agent, temp DATA_DIR; HTTP via fetch, ready via the terminal socket state frames',
      direct: 'the native CLI in node-pty in the bench process (test/fixtures/agent-pty.ts), hooks to test/fixtures/hook-receiver.ts',
      turns: TURNS,
      warmupTurns: WARMUP_TURNS,
      startSamples: STARTS + 1,
      enterPauseMs: ENTER_PAUSE_MS,
      codexSettleMs: CODEX_SETTLE_MS,
      /** Other work on the machine skews absolute figures more than daemon − direct (the modes alternate). */
      loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    },
  };
  const summary: Array<Record<string, unknown>> = [];
  try {
    for (const name of agents) {
      const res = await benchAgent(name, log);
      results[name] = res;
      const t = res.turns;
      summary.push(
        {
          agent: name,
          measure: 'turn overhead beyond model (ms)',
          daemon: `${t.daemon.overheadMs.median} (p90 ${t.daemon.overheadMs.p90})`,
          direct: `${t.direct.overheadMs.median} (p90 ${t.direct.overheadMs.p90})`,
          'daemon - direct': `${t.daemonMinusDirectMs.pairedMedian} (p90 ${t.daemonMinusDirectMs.pairedP90})`,
          n: t.daemon.overheadMs.n,
        },
        {
          agent: name,
          measure: 'turn wall / model (ms)',
          daemon: `${t.daemon.wallMs.median} / ${t.daemon.modelMs.median}`,
          direct: `${t.direct.wallMs.median} / ${t.direct.modelMs.median}`,
          'daemon - direct': '',
          n: t.daemon.wallMs.n,
        },
        {
          agent: name,
          measure: 'start to ready (ms)',
          daemon: `${res.ready.daemonMs.median} (p90 ${res.ready.daemonMs.p90})`,
          direct: `${res.ready.directMs.median} (p90 ${res.ready.directMs.p90})`,
          'daemon - direct': `${res.ready.daemonMinusDirectMs}`,
          n: res.ready.daemonMs.n,
        },
        {
          agent: name,
          measure: 'POST /api/sessions → 201 / → spawned (ms)',
          daemon: `${res.ready.daemonCreateMs.median} / ${res.ready.daemonSpawnMs?.median ?? '?'}`,
          direct: '',
          'daemon - direct': '',
          n: res.ready.daemonCreateMs.n,
        },
      );
      if (t.direct.detailMs) {
        summary.push({
          agent: name,
          measure: name === 'claude' ? 'direct: Enter → model request (ms)' : 'direct: notify after OSC done (ms)',
          daemon: '',
          direct: `${t.direct.detailMs.median} (p90 ${t.direct.detailMs.p90})`,
          'daemon - direct': '',
          n: t.direct.detailMs.n,
        });
      }
      const w = t.directWithoutPromptHook;
      if (w) {
        summary.push({
          agent: name,
          measure: 'what-if: direct without UserPromptSubmit hook: overhead / Enter → request (ms)',
          daemon: '',
          direct: `${w.overheadMs.median} (p90 ${w.overheadMs.p90}) / ${w.detailMs?.median ?? '?'}`,
          'daemon - direct': '',
          n: w.overheadMs.n,
        });
      }
    }
  } finally {
    for (const dir of tmpMade.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
  (results.method as Record<string, unknown>).loadAverageAtEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  results.summary = summary;
  return results;
}

if (require.main === module) {
  const wanted = process.argv.slice(2).filter((a): a is AgentName => a === 'claude' || a === 'codex');
  const started = Date.now();
  run(wanted.length ? wanted : undefined)
    .then((res) => {
      console.table(res.summary as unknown[]);
      const file = join(os.tmpdir(), `agentd-bench-chat-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(res, null, 2));
      const m = res.method as { loadAverageAtStart: number[]; loadAverageAtEnd: number[] };
      console.log(`load average ${m.loadAverageAtStart.join(' ')} at start, ${m.loadAverageAtEnd.join(' ')} at end (${os.cpus().length} cpus)`);
      console.log(`full results: ${file} (${Math.round((Date.now() - started) / 1000)} s)`);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
