import { randomBytes, randomUUID } from 'node:crypto';
import { Clock, iso } from '../common/clock';
import { Disposable } from '../common/disposable';
import { Emitter } from '../common/events';
import { Logger } from '../common/log';
import { Config } from '../config/schema';
import { AgentProfile, childEnv, resolveCommand } from '../agents/profiles';
import { killSessionProcesses, SESSION_TAG_ENV } from '../pty/kill';
import { readProc } from '../pty/processes';
import { PtyBackend, PtyExit, PtyProcess } from '../pty/PtyBackend';
import { MAX_PENDING_INPUT_BYTES } from '../pty/writer';
import { errors } from '../common/errors';
import { LIVE_STATES, SessionRecord, SessionState, SessionStore } from '../store/SessionStore';
import { SessionClient } from './Clients';
import { ClientStream } from './ClientStream';
import { ScreenKeeper } from './ScreenKeeper';
import { OutputLog } from './OutputLog';
import { ScreenService } from './ScreenService';
import { Conversation, ConversationHost } from './Conversation';
import { AgentDriver, createDriver, DriverHost } from './drivers';
import { AgentSignal } from '../agents/signals';
import { tokenMatches } from '../common/tokens';
import { lastPlainLine } from './text';
import { RingTrimmer } from './RingTrimmer';
import { SessionLifetime } from './SessionLifetime';
import type { EndState, MonitoredSession, ProcessTarget, ResourceSample } from '../health/types';

/** Output kept in memory per session for resume-by-offset; older bytes come from the store. */
export const RING_BYTES = 1024 * 1024;
/** How long close waits for the pty to report exit once every process is gone. */
const EXIT_WAIT_MS = 5_000;
/** An agent that has not said it is ready after this long is taken as ready (its hooks may be broken), with a warning. */
const READY_FALLBACK_MS = 30_000;
/** An agent that exits this soon after a revival failed to resume (e.g. "No conversation found"). */
const REVIVE_FAIL_WINDOW_MS = 5_000;

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

export class Session extends Disposable implements MonitoredSession {
  readonly record: SessionRecord;
  readonly log: OutputLog;
  private readonly screenKeeper: ScreenKeeper;
  private readonly stream: ClientStream;
  private pty: PtyProcess | null = null;
  /** Turns and the permission question: the chat on top of the terminal. */
  readonly chat: Conversation;
  private readonly logger: Logger;
  private readonly lifetime: SessionLifetime;
  private readonly ringTrimmer: RingTrimmer;
  private usage: ResourceSample | null = null;
  private ending: { state: SessionState; reason: string } | null = null;
  private readonly driver: AgentDriver;
  /** Per-spawn secret the agent's hooks present (only this session's processes know it). */
  private hookSecret: string | null = null;
  private endPromise: Promise<void> | null = null;
  private exitWaiters: Array<() => void> = [];
  private finalSnapshot: Promise<void> = Promise.resolve();
  private readyTimer: NodeJS.Timeout | null = null;
  /** Monotonic time of the last revival, to tell a resume that failed at once. */
  private revivedAtMono: number | null = null;
  private readonly stateEmitter = this.register(new Emitter<SessionState>());
  /** State changes (for chat sockets and the pool). */
  readonly onState = this.stateEmitter.event;

  constructor(record: SessionRecord, readonly profile: AgentProfile, private readonly deps: SessionDeps) {
    super();
    this.record = record;
    this.logger = deps.logger.child({ component: 'session', sessionId: record.id });
    this.log = new OutputLog(RING_BYTES, record.outputBytes);
    this.screenKeeper = this.register(new ScreenKeeper(record.id, this.log, () => ({ cols: this.record.cols, rows: this.record.rows }), { ...deps, logger: this.logger }));
    this.stream = this.register(new ClientStream(record.id, this.log, this.screenKeeper, { store: deps.store, logger: this.logger, onSize: (c, r) => this.applySize(c, r) }));
    this.lifetime = new SessionLifetime(record, deps.clock, deps.config.sessionTimeoutHours, () => this.persist());
    this.ringTrimmer = new RingTrimmer(record.id, this.log, deps);
    this.driver = this.register(createDriver(profile, this.driverHost()));
    this.chat = this.register(new Conversation(this.conversationHost(), { profile, driver: this.driver, store: deps.store, now: () => deps.clock.now() }));
  }

  private conversationHost(): ConversationHost {
    return {
      id: this.record.id,
      isLive: () => this.isLive(),
      describeEnd: () => `${this.state}${this.record.endReason ? ` (${this.record.endReason})` : ''}`,
      setState: (state) => this.setState(state),
      sendJson: (frame) => this.stream.sendJson(frame),
      writeKeys: (keys) => {
        if (!this.pty) return false;
        this.pty.write(keys);
        return true;
      },
      noteUserActivity: () => this.noteUserActivity(),
    };
  }

  private driverHost(): DriverHost {
    return {
      record: this.record,
      logger: this.logger,
      signal: (signal) => this.onSignal(signal),
      screenText: () => this.screenKeeper.text(),
      setAgentSessionId: (id) => {
        this.record.agentSessionId = id;
        this.persist();
        this.deps.store.flush();
        this.logger.info({ agentSessionId: id }, 'agent conversation id learned');
      },
      turnRunning: () => !!this.chat.current,
    };
  }

  /** What the agent tells us through its hooks or its output. */
  private onSignal(signal: AgentSignal | { kind: 'turn-interrupted' }): void {
    if (!this.isLive()) return;
    switch (signal.kind) {
      case 'ready':
        if (this.readyTimer) clearTimeout(this.readyTimer);
        this.readyTimer = null;
        // A turn queued during start-up starts now: straight to busy, not idle and then busy.
        if (this.state === 'starting') this.setState(this.chat.busy ? 'busy' : 'idle');
        this.chat.agentReady();
        return;
      case 'turn-ended':
        // A turn that died on an API error did not answer: interrupted, with the error as its text.
        this.chat.endTurn(signal.error ? 'interrupted' : 'completed', signal.text);
        return;
      case 'turn-interrupted':
        this.chat.endTurn('interrupted', null);
        return;
      case 'permission':
        this.chat.openPermission(signal.prompt, signal.options);
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
    const { config, backend, store, clock } = this.deps;
    const rec = this.record;
    this.screenKeeper.ensureOpen();
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
    // A (re)start is activity and a keep-alive: a revived session is not idle-culled for the time it lay ended.
    this.noteActivity();
    this.keepAlive();
    this.register(pty.onData((chunk) => this.onOutput(chunk)));
    this.register(pty.onExiting(() => this.onExiting(pty)));
    this.register(pty.onExit((exit) => this.onExit(pty, exit)));
    this.chat.restart();
    this.revivedAtMono = opts.revive ? clock.monotonic() : null;
    this.setState(this.driver.authoritative ? 'starting' : 'running');
    this.armReadyFallback();
    store.addEvent({ sessionId: rec.id, type: opts.revive ? 'revived' : 'created', at: clock.now(), detail: { pid: pty.pid, args } });
    this.logger.info({ pid: pty.pid, agent: this.profile.name, revive: opts.revive, cwd: rec.projectPath, maxHistoryMB: config.maxSessionHistoryMB }, 'agent started');
  }

  /** An agent that reports readiness through hooks is taken as ready after a while even if it never does. */
  private armReadyFallback(): void {
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = this.driver.authoritative
      ? setTimeout(() => {
          this.readyTimer = null;
          if (this.state !== 'starting') return;
          this.logger.warn({ afterMs: READY_FALLBACK_MS }, 'agent never reported ready through its hooks; taking it as ready');
          this.onSignal({ kind: 'ready' });
        }, READY_FALLBACK_MS)
      : null;
  }

  // ---- output path (hot) ----

  private onOutput(chunk: Buffer): void {
    const at = this.log.append(chunk);
    this.record.outputBytes = this.log.end;
    // First, before anything else writes to a client: a frame the native reader only began is finished here.
    this.stream.broadcast(chunk, at, this.pty?.fastOutput ?? null);
    this.deps.store.appendOutput(this.record.id, at, chunk);
    this.screenKeeper.noteOutput();
    this.chat.onOutput(chunk);
    this.driver.onOutput(chunk);
    this.ringTrimmer.noteOutput();
  }

  // ---- input ----

  /**
   * Raw input from a user: passed through untouched; counts as activity and
   * keep-alive. Throws `unavailable` (writing nothing) when the program has
   * left too much earlier input unread.
   */
  write(data: string | Buffer, from?: SessionClient): void {
    if (!this.pty || !this.isLive()) return;
    // The typing client's size governs before its input arrives (a command it types may ask for the size).
    if (from) this.stream.noteInput(from);
    if (!this.pty.write(data)) throw errors.inputBacklog(MAX_PENDING_INPUT_BYTES / 2 ** 20);
    this.noteUserActivity();
  }

  /**
   * Lets `client`'s keystrokes go straight to the terminal (the native input
   * path, pty/FastInput.ts) while it is the client that typed last, so that
   * they cannot change the governing size. terminal.ts offers it after each
   * read of the client's socket; the client declines when it cannot.
   */
  offerNativeInput(client: SessionClient): void {
    if (!client.startInput || !this.pty?.inputTarget || !this.isLive() || !this.stream.typedLast(client)) return;
    const target = this.pty.inputTarget();
    if (target) client.startInput(target, (rest) => this.nativeInput(client, rest));
  }

  /**
   * Keystrokes the native input path wrote: activity and keep-alive, as `write`
   * notes them (the client typed last already: it stays so). `rest`, which the
   * terminal did not take, is written.
   */
  private nativeInput(client: SessionClient, rest: Buffer | undefined): void {
    if (rest) return this.write(rest, client);
    this.noteUserActivity();
  }

  /** Records a keep-alive event (the lifetime itself restarts in keepAlive). */
  recordKeepAlive(): void {
    this.deps.store.addEvent({ sessionId: this.id, type: 'keep_alive', at: this.deps.clock.now(), detail: { expiresAt: iso(this.record.expiresAt) } });
  }

  // ---- clients ----

  /** Attaches a client (see ClientStream.attach for the frame order). */
  async attach(client: SessionClient, opts: { since?: number; cols?: number; rows?: number }): Promise<void> {
    this.noteActivity();
    this.deps.store.addEvent({ sessionId: this.id, type: 'attached', at: this.deps.clock.now(), detail: { client: client.id, since: opts.since ?? null } });
    await this.stream.attach(client, opts, () => this.toJSON());
    // An ended session's screen was only opened to show it: it does not change, and is reopened from the store when asked
    // again. Not before the final screen is stored (a store finds a closed model and skips).
    if (!this.isLive()) void this.finalSnapshot.then(() => !this.isLive() && this.screenKeeper.release());
  }

  detach(client: SessionClient): void {
    // A socket may report its close after the daemon disposed everything (and closed the store).
    if (this.isDisposed || !this.stream.detach(client)) return;
    this.noteActivity();
    this.deps.store.addEvent({ sessionId: this.id, type: 'detached', at: this.deps.clock.now(), detail: { client: client.id } });
  }

  ack(client: SessionClient, offset: number): void {
    this.stream.ack(client, offset);
  }

  resizeFrom(client: SessionClient, cols: number, rows: number): void {
    this.stream.resizeFrom(client, cols, rows);
  }

  /** Sets the terminal size chosen by the clients (see ClientSet.governingSize). */
  private applySize(cols: number, rows: number): void {
    if (cols === this.record.cols && rows === this.record.rows) return;
    this.record.cols = cols;
    this.record.rows = rows;
    this.screenKeeper.resize(cols, rows);
    this.pty?.resize(cols, rows);
  }


  // ---- lifetime (MonitoredSession) ----

  /** Restarts the lifetime and clears the warning. */
  keepAlive(): void {
    this.lifetime.restart();
  }

  /** A user's input or chat turn: activity, and a keep-alive (contract). */
  private noteUserActivity(): void {
    this.noteActivity();
    if (this.isLive()) this.keepAlive();
  }

  /** A client came or went: activity for idle culling and LRU, but not a keep-alive. */
  private noteActivity(): void {
    this.lifetime.noteActivity();
  }

  lifetimeStart(): number {
    this.stream.tellInput(); // keystrokes written natively are counted before the lifetime is judged
    return this.lifetime.start;
  }
  isWarned(): boolean {
    return this.record.warnedAt !== null;
  }
  isBusy(): boolean {
    return this.chat.busy;
  }
  clientCount(): number {
    return this.stream.size;
  }
  lastActivity(): number {
    this.stream.tellInput();
    return this.lifetime.lastActivity;
  }
  processTarget(): ProcessTarget | null {
    if (!this.isLive() || !this.record.tag) return null;
    return { sessionId: this.id, rootPid: this.record.pid, tag: this.record.tag, tty: this.pty?.ttyPath ?? null };
  }
  warn(expiresAtWallMs: number): void {
    const now = this.deps.clock.now();
    this.record.warnedAt = now;
    // The stored deadline, which the session's expiresAt shows: the monitor's is converted from the monotonic clock
    // again and may be a millisecond off it.
    const expiresAt = iso(this.record.expiresAt ?? expiresAtWallMs);
    this.stream.sendJson({ type: 'warning', expiresAt });
    this.deps.store.addEvent({ sessionId: this.id, type: 'warned', at: now, detail: { expiresAt } });
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
    // Its terminal too, found while the pty still holds it (null if the agent's exit is under way): from
    // here killSessionProcesses holds it itself, so the number stays this session's to the last pass.
    const report = await killSessionProcesses({ rootPid: this.record.pid, tag: this.record.tag ?? '', tty: pty?.ttyPath ?? null });
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

  /**
   * The agent exited by itself: whatever it left behind ends with it —
   * background jobs, setsid children by their tag, and those that also
   * dropped the tag but still hold its terminal. Started here, while the pty
   * still holds the terminal (its number is this session's); the kill holds
   * it itself from here to its last pass. (A close runs its own kill.)
   */
  private onExiting(pty: PtyProcess): void {
    if (pty !== this.pty || this.ending) return;
    void killSessionProcesses({ rootPid: null, tag: this.record.tag ?? '', tty: pty.ttyPath });
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
    }
    for (const w of this.exitWaiters.splice(0)) w();
  }

  /** The last non-empty line the agent printed, as plain text (for failure reasons). */
  private lastOutputLine(): string {
    const tail = this.log.slice(Math.max(this.log.start, this.log.end - 4096));
    return tail ? lastPlainLine(tail.toString('utf8')).slice(0, 300) : '';
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
    this.chat.abortAll();
    if (state === 'expired') this.stream.sendJson({ type: 'expired', reason });
    this.stream.sendJson({ type: 'exit', exitCode, signal, reason });
    const eventType = state === 'exited' ? 'exited' : state === 'failed' ? 'failed' : state === 'closed' ? 'closed' : state === 'expired' ? 'expired' : 'killed';
    store.addEvent({ sessionId: rec.id, type: eventType, at: rec.endedAt, detail: { reason, exitCode, signal } });
    this.setState(state);
    // How a session ended is rare and must survive a crash right after: written now.
    store.flush();
    this.stream.stopInput();
    const pty = this.pty;
    this.pty = null;
    pty?.dispose();
    this.finalSnapshot = this.screenKeeper.finish(() => !this.isLive());
    this.logger.info({ state, reason, exitCode, signal }, 'session state final');
  }

  private setState(state: SessionState): void {
    if (this.record.state === state) return;
    this.record.state = state;
    this.persist();
    this.stream.sendJson({ type: 'state', state });
    this.stateEmitter.fire(state);
  }

  /**
   * For a session loaded from the store that was live when the previous daemon
   * died: its agent is gone (or is ended now); it waits to be revived. Resumes
   * past the stored end are not trusted (ClientStream.noteCrashAt). Its turns
   * that were running, queued or waiting on a question died with the agent:
   * they end `interrupted`, as after a SIGTERM (Conversation.abortAll).
   */
  markStoppedWithDaemon(): void {
    this.stream.noteCrashAt(this.log.end);
    const rec = this.record;
    const { store, clock } = this.deps;
    rec.state = 'exited';
    rec.endReason = 'daemon_stopped';
    rec.endedAt = clock.now();
    rec.pid = null;
    rec.pidStartTime = null;
    store.addEvent({ sessionId: rec.id, type: 'exited', at: rec.endedAt, detail: { reason: 'daemon_stopped' } });
    for (const turn of store.listTurns(rec.id)) {
      if (turn.status === 'running') store.putTurn({ ...turn, status: 'interrupted', endedAt: rec.endedAt, response: '' });
    }
    this.persist();
  }

  persist(): void {
    this.lifetime.notePersisted();
    this.deps.store.putSession({ ...this.record });
  }

  toJSON(): Record<string, unknown> {
    this.stream.tellInput();
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
      clients: this.stream.size,
      cols: r.cols,
      rows: r.rows,
      exitCode: r.exitCode,
      signal: r.signal,
      endReason: r.endReason,
      outputBytes: r.outputBytes,
      ...(this.chat.prompt ? { prompt: this.chat.prompt } : {}),
    };
  }

  toActiveJSON(): Record<string, unknown> {
    return { ...this.toJSON(), ...this.figures, agentSessionId: this.record.agentSessionId };
  }

  override dispose(): void {
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.ringTrimmer.dispose();
    this.stream.stopInput();
    this.pty?.dispose();
    this.pty = null;
    super.dispose();
  }
}

