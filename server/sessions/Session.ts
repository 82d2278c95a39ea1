import { randomBytes, randomUUID } from 'node:crypto';
import { Clock, iso, wallTimeOf } from '../common/clock';
import { Disposable, IDisposable } from '../common/disposable';
import { Emitter } from '../common/events';
import { Logger } from '../common/log';
import { Config } from '../config/schema';
import { AgentProfile, childEnv, resolveCommand } from '../agents/profiles';
import { killSessionProcesses, SESSION_TAG_ENV } from '../pty/kill';
import { readProc } from '../pty/processes';
import { PtyBackend, PtyExit, PtyProcess } from '../pty/PtyBackend';
import { LIVE_STATES, SessionRecord, SessionState, SessionStore, TurnRecord } from '../store/SessionStore';
import { errors } from '../common/errors';
import { ClientSet, RESUME_BELOW_BYTES, SessionClient } from './Clients';
import { OutputLog } from './OutputLog';
import { ScreenService } from './ScreenService';
import { TurnTracker } from './TurnTracker';
import { AgentDriver, createDriver, DriverHost } from './drivers';
import { AgentSignal } from '../agents/signals';
import { tokenMatches } from '../common/tokens';
import { toPlainLines } from './text';
import type { EndState, MonitoredSession, ProcessTarget, ResourceSample } from '../health/types';

/** The pause between a chat line's text and its Enter: each real CLI drops one form otherwise (research note §5). */
export const ENTER_PAUSE_MS = 150;
/** Output kept in memory per session for resume-by-offset; older bytes come from the store. */
export const RING_BYTES = 1024 * 1024;
/** How long close waits for the pty to report exit once every process is gone. */
const EXIT_WAIT_MS = 5_000;
/** A keep-alive moves the stored deadline only when it moved at least this much. */
const KEEPALIVE_PERSIST_MS = 1_000;
/** An agent that has not said it is ready after this long is taken as ready (its hooks may be broken), with a warning. */
const READY_FALLBACK_MS = 30_000;
/** A snapshot is stored when output has been quiet this long… */
const SNAPSHOT_QUIET_MS = 2_000;
/** …and at least this often while it flows. */
const SNAPSHOT_EVERY_MS = 5_000;
/** An agent that exits this soon after a revival failed to resume (e.g. "No conversation found"). */
const REVIVE_FAIL_WINDOW_MS = 5_000;
/** How often lagging clients are checked for having drained. */
const LAG_CHECK_MS = 100;

export interface SessionDeps {
  /** Where the agent's hook relay posts (loopback, this daemon). */
  hookUrl: () => string;
  config: Config;
  backend: PtyBackend;
  store: SessionStore;
  screen: ScreenService;
  clock: Clock;
  logger: Logger;
}

export interface ActiveFigures {
  memoryMB: number | null;
  cpuPercent: number | null;
}

export interface OpenPrompt {
  turnId: string | null;
  prompt: string;
  options: Array<{ id: string; label: string }>;
}

export type TerminalFrame = Record<string, unknown> & { type: string };

export class Session extends Disposable implements MonitoredSession {
  readonly record: SessionRecord;
  readonly log: OutputLog;
  readonly clients = new ClientSet();
  private pty: PtyProcess | null = null;
  private turns: TurnTracker | null = null;
  private readonly logger: Logger;
  private lifetimeStartMono: number;
  private lastActivityMono: number;
  private usage: ResourceSample | null = null;
  private ending: { state: SessionState; reason: string } | null = null;
  private readonly driver: AgentDriver;
  /** Per-spawn secret the agent's hooks present (only this session's processes know it). */
  private hookSecret: string | null = null;
  private endPromise: Promise<void> | null = null;
  private exitWaiters: Array<() => void> = [];
  private lagTimer: NodeJS.Timeout | null = null;
  private snapshotTimer: NodeJS.Timeout | null = null;
  private snapshotInFlight = false;
  private finalSnapshot: Promise<void> = Promise.resolve();
  private persistedExpiresAt = 0;
  private readyTimer: NodeJS.Timeout | null = null;
  private lastOutputMono = 0;
  private lastSnapshotMono = 0;
  /** Monotonic time of the last revival, to tell a resume that failed at once. */
  private revivedAtMono: number | null = null;
  private readonly stateEmitter = this.register(new Emitter<SessionState>());
  private readonly turnEmitter = this.register(new Emitter<TurnRecord>());
  /** State changes (for chat sockets and the pool). */
  readonly onState = this.stateEmitter.event;
  /** Turns that ended. */
  readonly onTurnEnd = this.turnEmitter.event;
  private readonly promptEmitter = this.register(new Emitter<OpenPrompt | null>());
  /** A permission question opened (or closed: null). */
  readonly onPrompt = this.promptEmitter.event;
  private prompt: OpenPrompt | null = null;

  constructor(record: SessionRecord, readonly profile: AgentProfile, private readonly deps: SessionDeps) {
    super();
    this.record = record;
    this.logger = deps.logger.child({ component: 'session', sessionId: record.id });
    this.log = new OutputLog(RING_BYTES, record.outputBytes);
    this.lifetimeStartMono = this.monoFromWall(record.expiresAt, deps.config.sessionTimeoutHours);
    this.lastActivityMono = deps.clock.monotonic();
    this.driver = this.register(createDriver(profile, this.driverHost()));
  }

  private driverHost(): DriverHost {
    return {
      record: this.record,
      logger: this.logger,
      signal: (signal) => this.onSignal(signal),
      screenText: () => this.deps.screen.text(this.id),
      setAgentSessionId: (id) => {
        this.record.agentSessionId = id;
        this.persist();
        this.deps.store.flush();
        this.logger.info({ agentSessionId: id }, 'agent conversation id learned');
      },
      turnRunning: () => !!this.turns?.current,
    };
  }

  /** What the agent tells us through its hooks or its output. */
  private onSignal(signal: AgentSignal | { kind: 'turn-interrupted' }): void {
    if (!this.isLive()) return;
    switch (signal.kind) {
      case 'ready':
        if (this.readyTimer) clearTimeout(this.readyTimer);
        this.readyTimer = null;
        if (this.state === 'starting') this.setState('idle');
        this.turns?.pump();
        return;
      case 'turn-ended':
        this.prompt = null;
        this.turns?.end('completed', signal.text);
        return;
      case 'turn-interrupted':
        this.prompt = null;
        this.turns?.end('interrupted', null);
        return;
      case 'permission':
        this.openPermission(signal.prompt, signal.options);
        return;
      default:
        return;
    }
  }

  /** A hook call from the agent, if it carries this session's secret. */
  acceptHook(secret: unknown, event: string, payload: unknown): boolean {
    if (!this.hookSecret || !this.isLive() || !tokenMatches(this.hookSecret, secret)) return false;
    this.driver.onHook(event, payload);
    return true;
  }

  get id(): string {
    return this.record.id;
  }

  get state(): SessionState {
    return this.record.state;
  }

  isLive(): boolean {
    return LIVE_STATES.has(this.record.state);
  }

  /** Spawns the agent. A missing program or bad folder was refused by the pool before; a failed spawn ends `failed`. */
  start(opts: { revive: boolean }): void {
    const { config, backend, store, screen, clock } = this.deps;
    const rec = this.record;
    this.ensureScreen();
    const file = resolveCommand(this.profile);
    const tag = randomUUID();
    this.hookSecret = randomBytes(24).toString('hex');
    const baseEnv = childEnv(process.env, this.profile, { [SESSION_TAG_ENV]: tag, AGENTD_SESSION_ID: rec.id });
    const launch = this.driver.launch({ revive: opts.revive, env: baseEnv, hookUrl: this.deps.hookUrl(), hookSecret: this.hookSecret });
    const args = launch.args;
    const env = { ...baseEnv, ...launch.env };
    try {
      this.pty = backend.spawn({ file, args, cwd: rec.projectPath, env, cols: rec.cols, rows: rec.rows });
    } catch (err) {
      this.setEnded('failed', `could not start ${this.profile.name}: ${(err as Error).message}`, null, null);
      return;
    }
    const pty = this.pty;
    rec.pid = pty.pid;
    rec.pidStartTime = readProc(pty.pid)?.startTime ?? null;
    rec.tag = tag;
    rec.endedAt = rec.exitCode = rec.signal = rec.endReason = null;
    this.ending = null;
    this.endPromise = null;
    this.keepAlive();
    this.register(pty.onData((chunk) => this.onOutput(chunk)));
    this.register(pty.onExit((exit) => this.onExit(pty, exit)));
    this.turns?.dispose();
    this.turns = this.register(
      new TurnTracker(rec.id, {
        idleMs: this.profile.idleMs,
        promptPattern: this.profile.promptPattern,
        authoritative: this.driver.authoritative,
        now: () => clock.now(),
        submit: (text) => this.submitLine(text),
        isReady: () => this.isLive() && this.driver.isReady() && !this.prompt,
      }),
    );
    this.register(this.turns.onTurnStart((turn) => this.onTurnStart(turn)));
    this.register(this.turns.onTurnEnd(({ turn }) => this.onTurnEnded(turn)));
    this.revivedAtMono = opts.revive ? clock.monotonic() : null;
    this.setState(this.driver.authoritative ? 'starting' : 'running');
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = this.driver.authoritative
      ? setTimeout(() => {
          this.readyTimer = null;
          if (this.state !== 'starting') return;
          this.logger.warn({ afterMs: READY_FALLBACK_MS }, 'agent never reported ready through its hooks; taking it as ready');
          this.onSignal({ kind: 'ready' });
        }, READY_FALLBACK_MS)
      : null;
    store.addEvent({ sessionId: rec.id, type: opts.revive ? 'revived' : 'created', at: clock.now(), detail: { pid: pty.pid, args } });
    this.logger.info({ pid: pty.pid, agent: this.profile.name, revive: opts.revive, cwd: rec.projectPath, maxHistoryMB: config.maxSessionHistoryMB }, 'agent started');
  }

  /**
   * Opens the screen model if it is not open: a new session starts empty; a
   * stored one starts from its newest snapshot plus the bytes after it, so
   * the screen after a restart is the last stored one, exactly.
   */
  ensureScreen(): void {
    const { screen, store } = this.deps;
    const id = this.record.id;
    if (screen.has(id)) return;
    const end = this.log.end;
    const snap = end > 0 ? store.latestSnapshot(id, end) : undefined;
    const range = end > 0 ? store.outputRange(id) : { start: 0, end: 0 };
    const from = snap ? snap.offset : range.start;
    if (!snap && from > 0) this.logger.warn({ from }, 'no stored snapshot and the oldest output is gone: the screen is rebuilt from what is kept');
    screen.open(id, { cols: snap?.cols ?? this.record.cols, rows: snap?.rows ?? this.record.rows, offset: from, base: snap?.data });
    if (snap && (snap.cols !== this.record.cols || snap.rows !== this.record.rows)) screen.resize(id, this.record.cols, this.record.rows);
    if (from < this.log.start) {
      const stored = store.readOutput(id, from, this.log.start);
      if (stored && stored.offset === from) screen.feed(id, stored.data);
    }
    const inMemory = this.log.slice(Math.max(from, this.log.start));
    if (inMemory && inMemory.length) screen.feed(id, inMemory);
  }

  // ---- output path (hot) ----

  private onOutput(chunk: Buffer): void {
    const at = this.log.append(chunk);
    this.record.outputBytes = this.log.end;
    const behind = this.clients.broadcast(chunk, at);
    this.deps.store.appendOutput(this.record.id, at, chunk);
    this.deps.screen.feed(this.record.id, chunk);
    this.turns?.onOutput(chunk);
    this.driver.onOutput(chunk);
    if (behind.length) this.watchLaggards();
    this.lastOutputMono = this.deps.clock.monotonic();
    if (!this.snapshotTimer) this.armSnapshot();
  }

  // ---- stored screen snapshots (off the output path: the worker serializes) ----

  private armSnapshot(): void {
    this.snapshotTimer = setTimeout(() => {
      this.snapshotTimer = null;
      const now = this.deps.clock.monotonic();
      const quietFor = now - this.lastOutputMono;
      const flowingFor = now - this.lastSnapshotMono;
      if (quietFor >= SNAPSHOT_QUIET_MS || flowingFor >= SNAPSHOT_EVERY_MS) void this.storeSnapshot();
      else this.armSnapshot();
    }, SNAPSHOT_QUIET_MS);
  }

  /** Stores the screen at the current end of the stream. */
  async storeSnapshot(): Promise<void> {
    if (this.snapshotInFlight || !this.deps.screen.has(this.id)) return;
    this.snapshotInFlight = true;
    this.lastSnapshotMono = this.deps.clock.monotonic();
    try {
      const snap = await this.deps.screen.snapshot(this.id);
      this.deps.store.putSnapshot({ sessionId: this.id, offset: snap.offset, cols: snap.cols, rows: snap.rows, data: snap.data, createdAt: this.deps.clock.now() });
    } catch (err) {
      // The next quiet period tries again; a missing snapshot only costs replay time after a crash.
      this.logger.warn({ err: (err as Error).message }, 'screen snapshot failed');
    } finally {
      this.snapshotInFlight = false;
    }
  }

  // ---- input ----

  /** Raw input from a user: passed through untouched; counts as activity and keep-alive. */
  write(data: string | Buffer, from?: SessionClient): void {
    if (!this.pty || !this.isLive()) return;
    if (from) {
      const att = this.clients.get(from);
      if (att) {
        this.clients.noteInput(att);
        this.applyGoverningSize();
      }
    }
    this.pty.write(data);
    this.noteUserActivity();
  }

  /** Writes a chat line the way both real CLIs accept it: text, a pause, then Enter alone. */
  private async submitLine(text: string): Promise<void> {
    if (!this.pty) throw new Error('no agent running');
    // A multi-line message goes as a bracketed paste to the agents that enable it, so its newlines do not submit early.
    this.pty.write(this.driver.authoritative && text.includes('\n') ? `\x1b[200~${text}\x1b[201~` : text);
    await new Promise((r) => setTimeout(r, ENTER_PAUSE_MS));
    if (!this.pty || !this.isLive()) throw new Error('agent ended before Enter');
    this.pty.write('\r');
  }

  /** Queues a chat (or recap) turn; the returned record is updated in place when it ends. */
  sendTurn(kind: TurnRecord['kind'], prompt: string, deviceId: string | null): TurnRecord {
    if (!this.turns || !this.isLive()) throw new Error('session is not running');
    this.noteUserActivity();
    const turn = this.turns.enqueue(kind, prompt, deviceId);
    this.deps.store.putTurn(turn);
    return turn;
  }

  get openPrompt(): OpenPrompt | null {
    return this.prompt;
  }

  /** The agent asks a permission question (from its hooks or its screen). */
  openPermission(prompt: string, options: OpenPrompt['options']): void {
    this.prompt = { turnId: this.turns?.current?.id ?? null, prompt, options };
    this.turns?.touch();
    this.clients.sendJson({ type: 'permission', ...this.prompt });
    this.setState('needs_input');
    this.promptEmitter.fire(this.prompt);
  }

  /** The question was answered or went away. */
  closePermission(): void {
    if (!this.prompt) return;
    this.prompt = null;
    this.promptEmitter.fire(null);
    if (this.isLive()) this.setState(this.turns?.busy ? 'busy' : 'idle');
  }

  /** Writes the keys that answer the open question with option `optionId`. */
  answer(optionId: unknown): void {
    const prompt = this.prompt;
    if (!prompt || !this.isLive()) throw errors.conflict('no permission question is open');
    const option = prompt.options.find((o) => o.id === String(optionId));
    if (!option) throw errors.invalid(`option must be one of ${prompt.options.map((o) => o.id).join(', ')}`);
    this.pty?.write(this.driver.permissionKeys(option.id));
    this.noteUserActivity();
    this.driver.onAnswer(option);
    this.closePermission();
  }

  /** Records a keep-alive event (the lifetime itself restarts in keepAlive). */
  recordKeepAlive(): void {
    this.deps.store.addEvent({ sessionId: this.id, type: 'keep_alive', at: this.deps.clock.now(), detail: { expiresAt: iso(this.record.expiresAt) } });
  }

  get currentTurn(): TurnRecord | null {
    return this.turns?.current ?? null;
  }

  private onTurnStart(turn: TurnRecord): void {
    this.deps.store.putTurn(turn);
    if (this.isLive()) this.setState('busy');
  }

  private onTurnEnded(turn: TurnRecord): void {
    this.deps.store.putTurn(turn);
    this.clients.sendJson({ type: 'turn', turnId: turn.id, status: turn.status, response: turn.response });
    this.turnEmitter.fire(turn);
    if (this.isLive() && !this.turns?.busy && !this.prompt) this.setState('idle');
  }

  // ---- clients ----

  /**
   * Attaches a client. Fresh (no `since`, or bytes gone): attached(N),
   * snapshot(N), bytes from N. Resume with kept bytes: attached(S), bytes from S.
   */
  async attach(client: SessionClient, opts: { since?: number; cols?: number; rows?: number }): Promise<void> {
    const att = this.clients.add(client, opts.cols, opts.rows);
    this.applyGoverningSize();
    this.noteUserActivity();
    this.deps.store.addEvent({ sessionId: this.id, type: 'attached', at: this.deps.clock.now(), detail: { client: client.id, since: opts.since ?? null } });
    const since = opts.since;
    if (since !== undefined && since <= this.log.end) {
      const missing = this.readBytes(since);
      if (missing) {
        client.sendJson({ type: 'attached', session: this.toJSON(), offset: since });
        if (missing.length) client.sendOutput(missing);
        att.position = since + missing.length;
        this.catchUp(att);
        return;
      }
    }
    client.sendJson({ type: 'attached', session: this.toJSON(), offset: this.log.end });
    await this.resync(att, false);
  }

  /** Bytes from `from` to the end, from memory or the store; null if no longer kept. */
  private readBytes(from: number): Buffer | null {
    const inMemory = this.log.slice(from);
    if (inMemory) return inMemory;
    const stored = this.deps.store.readOutput(this.id, from, this.log.start);
    if (!stored || stored.offset !== from) return null;
    const rest = this.log.slice(this.log.start);
    return rest ? Buffer.concat([stored.data, rest]) : null;
  }

  /** Sends a snapshot at the current end, then whatever came after it, then live bytes. */
  private async resync(att: ReturnType<ClientSet['add']>, announce: boolean): Promise<void> {
    att.ready = false;
    this.ensureScreen();
    const at = this.log.end;
    const snap = await this.deps.screen.snapshot(this.id, (from) => {
      const data = this.log.slice(Math.max(from, this.log.start));
      return data ? { offset: Math.max(from, this.log.start), data } : null;
    });
    if (!this.clients.get(att.client)) return; // left meanwhile
    if (announce && snap.offset !== at) this.logger.debug({ at, snapshot: snap.offset }, 'snapshot offset moved');
    att.client.sendJson({ type: 'snapshot', offset: snap.offset, cols: snap.cols, rows: snap.rows, data: snap.data });
    att.position = snap.offset;
    att.lagging = false;
    this.catchUp(att);
  }

  /** Sends the bytes between the client's position and the end, then marks it live. */
  private catchUp(att: ReturnType<ClientSet['add']>): void {
    const rest = this.log.slice(att.position);
    if (rest === null) {
      void this.resync(att, true);
      return;
    }
    if (rest.length) att.client.sendOutput(rest);
    att.position = this.log.end;
    att.ready = true;
  }

  detach(client: SessionClient): void {
    if (!this.clients.remove(client)) return;
    this.noteUserActivity();
    this.applyGoverningSize();
    this.deps.store.addEvent({ sessionId: this.id, type: 'detached', at: this.deps.clock.now(), detail: { client: client.id } });
  }

  /** A client's acknowledgement of bytes processed. */
  ack(client: SessionClient, offset: number): void {
    const att = this.clients.get(client);
    if (!att || offset > att.position) return;
    att.acked = Math.max(att.acked ?? 0, offset);
    if (att.lagging) this.checkLaggard(att);
  }

  /** A client's terminal size (validated by the caller). */
  resizeFrom(client: SessionClient, cols: number, rows: number): void {
    const att = this.clients.get(client);
    if (!att) return;
    this.clients.noteSize(att, cols, rows);
    this.applyGoverningSize();
  }

  private applyGoverningSize(): void {
    const size = this.clients.governingSize();
    if (!size || (size.cols === this.record.cols && size.rows === this.record.rows)) return;
    this.record.cols = size.cols;
    this.record.rows = size.rows;
    this.deps.screen.resize(this.id, size.cols, size.rows);
    this.pty?.resize(size.cols, size.rows);
  }

  private watchLaggards(): void {
    if (this.lagTimer) return;
    this.lagTimer = setInterval(() => {
      const lagging = this.clients.all().filter((a) => a.lagging);
      if (lagging.length === 0) {
        clearInterval(this.lagTimer!);
        this.lagTimer = null;
        return;
      }
      for (const att of lagging) this.checkLaggard(att);
    }, LAG_CHECK_MS);
  }

  private checkLaggard(att: ReturnType<ClientSet['add']>): void {
    if (att.inFlight > RESUME_BELOW_BYTES || !att.ready) return;
    // It drained: send a fresh screen instead of the backlog it missed.
    att.acked = null;
    void this.resync(att, true).catch((err) => this.logger.warn({ err: (err as Error).message }, 'resync failed'));
  }

  /** Sends a JSON frame to every attached client. */
  broadcastJson(frame: TerminalFrame): void {
    this.clients.sendJson(frame);
  }

  // ---- lifetime (MonitoredSession) ----

  private monoFromWall(expiresAt: number | null, timeoutHours: number): number {
    const { clock } = this.deps;
    if (expiresAt === null) return clock.monotonic();
    const remaining = expiresAt - clock.now();
    return clock.monotonic() + remaining - timeoutHours * 3_600_000;
  }

  /** Restarts the lifetime and clears the warning. */
  keepAlive(): void {
    const { clock, config } = this.deps;
    this.lifetimeStartMono = clock.monotonic();
    this.record.expiresAt = Math.round(wallTimeOf(clock, this.lifetimeStartMono + config.sessionTimeoutHours * 3_600_000));
    const wasWarned = this.record.warnedAt !== null;
    this.record.warnedAt = null;
    // Every keystroke is a keep-alive: the stored deadline is refreshed at most once a second, off the input path's way.
    if (wasWarned || this.record.expiresAt - this.persistedExpiresAt >= KEEPALIVE_PERSIST_MS) this.persist();
  }

  private noteUserActivity(): void {
    this.lastActivityMono = this.deps.clock.monotonic();
    this.record.lastActivityAt = this.deps.clock.now();
    if (this.isLive()) this.keepAlive();
  }

  lifetimeStart(): number {
    return this.lifetimeStartMono;
  }
  isWarned(): boolean {
    return this.record.warnedAt !== null;
  }
  isBusy(): boolean {
    return this.turns?.busy ?? false;
  }
  clientCount(): number {
    return this.clients.size;
  }
  lastActivity(): number {
    return this.lastActivityMono;
  }
  processTarget(): ProcessTarget | null {
    if (!this.isLive() || !this.record.tag) return null;
    return { sessionId: this.id, rootPid: this.record.pid, tag: this.record.tag };
  }
  warn(expiresAtWallMs: number): void {
    const now = this.deps.clock.now();
    this.record.warnedAt = now;
    this.clients.sendJson({ type: 'warning', expiresAt: iso(expiresAtWallMs) });
    this.deps.store.addEvent({ sessionId: this.id, type: 'warned', at: now, detail: { expiresAt: iso(expiresAtWallMs) } });
    this.persist();
  }
  recordUsage(sample: ResourceSample | null): void {
    this.usage = sample;
  }
  get figures(): ActiveFigures {
    if (!this.usage) return { memoryMB: null, cpuPercent: null };
    return { memoryMB: Math.round((this.usage.memoryBytes / 2 ** 20) * 10) / 10, cpuPercent: Math.round(this.usage.cpuPercent * 10) / 10 };
  }

  // ---- ending ----

  /**
   * Ends every process of the session (SIGHUP, SIGTERM, SIGKILL; the tree and
   * the tagged ones that left it) and resolves once they are gone and the
   * session is in its final state. History is kept.
   */
  end(state: EndState | 'closed' | 'exited', reason: string): Promise<void> {
    if (this.endPromise) return this.endPromise;
    if (!this.isLive()) return Promise.resolve();
    this.ending = { state, reason };
    this.endPromise = this.terminate();
    return this.endPromise;
  }

  private async terminate(): Promise<void> {
    const pty = this.pty;
    const exited = new Promise<void>((resolve) => this.exitWaiters.push(resolve));
    const report = await killSessionProcesses({ rootPid: this.record.pid, tag: this.record.tag ?? '' });
    if (report.survivors.length) this.logger.error({ survivors: report.survivors }, 'processes survived SIGKILL');
    if (pty) {
      // The pty reports exit once its reader drained; bound the wait in case the master never closes.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, EXIT_WAIT_MS)))]);
      clearTimeout(timer);
    }
    if (this.isLive()) this.finishEnding(null, null);
    await this.finalSnapshot;
    this.logger.info({ state: this.record.state, reason: this.record.endReason, signalled: report.pids.length, escalatedTo: report.escalatedTo }, 'session ended');
  }

  private onExit(pty: PtyProcess, exit: PtyExit): void {
    if (pty !== this.pty) return;
    if (this.ending) {
      this.finishEnding(exit.exitCode, exit.signal);
    } else {
      let reason = exit.signal ? `agent killed by signal ${exit.signal}` : `agent exited with code ${exit.exitCode}`;
      if (this.revivedAtMono !== null && this.deps.clock.monotonic() - this.revivedAtMono < REVIVE_FAIL_WINDOW_MS) {
        reason = `revive failed: ${this.lastOutputLine() || reason}`;
      }
      this.setEnded('exited', reason, exit.exitCode, exit.signal);
      // Whatever it left behind (background jobs, setsid children) ends with it.
      void killSessionProcesses({ rootPid: null, tag: this.record.tag ?? '' });
    }
    for (const w of this.exitWaiters.splice(0)) w();
  }

  /** The last non-empty line the agent printed, as plain text (for failure reasons). */
  private lastOutputLine(): string {
    const tail = this.log.slice(Math.max(this.log.start, this.log.end - 4096));
    if (!tail) return '';
    const lines = toPlainLines(tail.toString('utf8')).filter((l) => l.trim() !== '');
    return (lines[lines.length - 1] ?? '').trim().slice(0, 300);
  }

  private finishEnding(exitCode: number | null, signal: number | null): void {
    const { state, reason } = this.ending!;
    this.setEnded(state, reason, exitCode, signal);
  }

  private setEnded(state: SessionState, reason: string, exitCode: number | null, signal: number | null): void {
    const { clock, store } = this.deps;
    const rec = this.record;
    rec.exitCode = exitCode;
    rec.signal = signal;
    rec.endReason = reason;
    rec.endedAt = clock.now();
    rec.pid = null;
    rec.pidStartTime = null;
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = null;
    this.turns?.abortAll();
    this.prompt = null;
    if (state === 'expired') this.clients.sendJson({ type: 'expired', reason });
    this.clients.sendJson({ type: 'exit', exitCode, signal, reason });
    const eventType = state === 'exited' ? 'exited' : state === 'failed' ? 'failed' : state === 'closed' ? 'closed' : state === 'expired' ? 'expired' : 'killed';
    store.addEvent({ sessionId: rec.id, type: eventType, at: rec.endedAt, detail: { reason, exitCode, signal } });
    this.setState(state);
    // How a session ended is rare and must survive a crash right after: written now.
    store.flush();
    const pty = this.pty;
    this.pty = null;
    pty?.dispose();
    this.finalSnapshot = this.storeSnapshot();
    this.logger.info({ state, reason, exitCode, signal }, 'session state final');
  }

  private setState(state: SessionState): void {
    if (this.record.state === state) return;
    this.record.state = state;
    this.persist();
    this.clients.sendJson({ type: 'state', state });
    this.stateEmitter.fire(state);
  }

  /**
   * For a session loaded from the store that was live when the previous daemon
   * died: its agent is gone (or is ended now); it waits to be revived.
   */
  markStoppedWithDaemon(): void {
    const rec = this.record;
    rec.state = 'exited';
    rec.endReason = 'daemon_stopped';
    rec.endedAt = this.deps.clock.now();
    rec.pid = null;
    rec.pidStartTime = null;
    this.deps.store.addEvent({ sessionId: rec.id, type: 'exited', at: rec.endedAt, detail: { reason: 'daemon_stopped' } });
    this.persist();
  }

  persist(): void {
    this.persistedExpiresAt = this.record.expiresAt ?? 0;
    this.deps.store.putSession({ ...this.record });
  }

  toJSON(): Record<string, unknown> {
    const r = this.record;
    return {
      id: r.id,
      agent: r.agent,
      projectPath: r.projectPath,
      state: r.state,
      pid: r.pid,
      createdAt: iso(r.createdAt),
      lastActivityAt: iso(r.lastActivityAt),
      expiresAt: this.isLive() ? iso(r.expiresAt) : null,
      warnedAt: iso(r.warnedAt),
      endedAt: iso(r.endedAt),
      clients: this.clients.size,
      cols: r.cols,
      rows: r.rows,
      exitCode: r.exitCode,
      signal: r.signal,
      endReason: r.endReason,
      outputBytes: r.outputBytes,
      ...(this.prompt ? { prompt: this.prompt } : {}),
    };
  }

  toActiveJSON(): Record<string, unknown> {
    return { ...this.toJSON(), ...this.figures, agentSessionId: this.record.agentSessionId };
  }

  override dispose(): void {
    if (this.readyTimer) clearTimeout(this.readyTimer);
    if (this.snapshotTimer) clearTimeout(this.snapshotTimer);
    this.snapshotTimer = null;
    if (this.lagTimer) clearInterval(this.lagTimer);
    this.lagTimer = null;
    this.pty?.dispose();
    this.pty = null;
    this.deps.screen.close(this.id);
    super.dispose();
  }
}

export type { IDisposable };
