import { realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Disposable } from '../common/disposable';
import { errors } from '../common/errors';
import { isValidSessionId, newId, SESSION_ID_RULE } from '../common/ids';
import { releaseMemorySoon } from '../common/memory';
import { AgentProfile, AgentRegistry, resolveCommand } from '../agents/profiles';
import { MonitoredPool, MonitoredSession } from '../health/types';
import { LIVE_STATES, SessionRecord } from '../store/SessionStore';
import { killSessionProcesses, SESSION_TAG_ENV } from '../pty/kill';
import { isSameProcess, ProcessTable } from '../pty/processes';
import { Session, SessionDeps } from './Session';

export interface CreateRequest {
  agent: unknown;
  projectPath?: unknown;
  sessionId?: unknown;
  cols?: unknown;
  rows?: unknown;
  deviceToken?: unknown;
}

/** Terminal size bounds (contract: resize frames); a new session outside them is 400. */
export const MAX_COLS = 1000;
export const MAX_ROWS = 500;
const DEFAULT_COLS = 120;
const DEFAULT_ROWS = 40;
const MAX_PATH_LENGTH = 4096;

/** The profile of a stored session; one whose profile was removed from the config still lists, but cannot revive. */
function profileFor(agents: AgentRegistry, name: string): AgentProfile {
  try {
    return agents.get(name);
  } catch {
    return { name, kind: 'generic', command: name, args: [], env: {}, recapPrompt: '', idleMs: 1500, removed: true };
  }
}

export function isValidSize(cols: unknown, rows: unknown): cols is number {
  return Number.isInteger(cols) && Number.isInteger(rows) && (cols as number) >= 1 && (cols as number) <= MAX_COLS && (rows as number) >= 1 && (rows as number) <= MAX_ROWS;
}

/**
 * Owns every session, live or ended: creation with its checks (agent, folder,
 * id, limits), look-up, closing. The HTTP layer is thin over this.
 */
export class SessionPool extends Disposable implements MonitoredPool {
  private readonly sessions = new Map<string, Session>();
  private memoryPressure: { usedMB: number; maxMB: number } | null = null;
  /** The daemon is stopping: nothing starts any more (a client reconnecting mid-shutdown would revive its session). */
  private stopping = false;

  constructor(private readonly deps: SessionDeps & { agents: AgentRegistry }) {
    super();
  }

  /** Validates everything, then spawns. Nothing is created when a check fails. */
  create(req: CreateRequest): Session {
    if (this.stopping) throw errors.stopping();
    const { config, clock, store } = this.deps;
    const profile = this.deps.agents.get(req.agent);
    const projectPath = this.resolveProjectPath(req.projectPath);
    const { cols, rows } = this.resolveSize(req.cols, req.rows);
    const id = this.resolveId(req.sessionId);
    if (req.deviceToken !== undefined && (typeof req.deviceToken !== 'string' || req.deviceToken.length > 512)) {
      throw errors.invalid('deviceToken must be a string of at most 512 characters');
    }
    resolveCommand(profile); // 400 agent_unavailable before anything exists
    if (this.liveCount() >= config.maxConcurrentSessions) throw errors.sessionLimit(config.maxConcurrentSessions);
    if (this.memoryPressure) throw errors.memoryLimit(this.memoryPressure.usedMB, this.memoryPressure.maxMB);

    const now = clock.now();
    const record: SessionRecord = {
      id,
      agent: profile.name,
      projectPath,
      state: 'starting',
      pid: null,
      pidStartTime: null,
      tag: null,
      agentSessionId: null,
      createdAt: now,
      lastActivityAt: now,
      expiresAt: null,
      warnedAt: null,
      endedAt: null,
      cols,
      rows,
      exitCode: null,
      signal: null,
      endReason: null,
      deviceToken: (req.deviceToken as string | undefined) ?? null,
      outputBytes: 0,
    };
    const session = this.adopt(record, profile);
    session.start({ revive: false });
    store.putSession({ ...session.record });
    // A session must outlive a crash a moment after it was created: its row goes to disk now, not with the next batch.
    store.flush();
    return session;
  }

  /**
   * Loads every stored session after a start. Sessions that were live when the
   * previous daemon stopped or crashed are marked `exited`/`daemon_stopped`;
   * any of their processes still running are ended first — identified by pid
   * *and* start time, or by their tag, never by a bare pid that may be reused.
   */
  async restore(): Promise<{ restored: number; stopped: number }> {
    const { store, agents, logger } = this.deps;
    let stopped = 0;
    const records = store.listSessions();
    // One pass over /proc for all of them: most stopped sessions left nothing running.
    const table = new ProcessTable();
    const byTag = table.taggedAll(SESSION_TAG_ENV);
    const leftovers: Promise<unknown>[] = [];
    for (const stored of records) {
      if (this.sessions.has(stored.id)) continue;
      const range = store.outputRange(stored.id);
      const record = { ...stored, outputBytes: range.end > 0 ? range.end : stored.outputBytes };
      const session = this.adopt(record, profileFor(agents, record.agent));
      if (!LIVE_STATES.has(record.state)) continue;
      stopped++;
      const rootPid = record.pid && record.pidStartTime !== null && isSameProcess(record.pid, record.pidStartTime) ? record.pid : null;
      if (rootPid || (record.tag && byTag.has(record.tag))) {
        leftovers.push(
          killSessionProcesses({ rootPid, tag: record.tag ?? '' }, 200, 1_000).then((report) => {
            if (report.pids.length) logger.warn({ sessionId: record.id, pids: report.pids, escalatedTo: report.escalatedTo }, 'ended processes left by the previous daemon');
          }),
        );
      }
      session.markStoppedWithDaemon();
    }
    await Promise.all(leftovers);
    logger.info({ restored: records.length, stopped }, 'sessions restored from the store');
    return { restored: records.length, stopped };
  }

  /** Takes a session object under the pool's care (new, or loaded from the store). */
  adopt(record: SessionRecord, profile: AgentProfile): Session {
    const session = new Session(record, profile, this.deps);
    this.sessions.set(record.id, session);
    return session;
  }

  private resolveId(raw: unknown): string {
    if (raw === undefined || raw === null) return newId();
    if (!isValidSessionId(raw)) throw errors.invalid(SESSION_ID_RULE);
    if (this.sessions.has(raw) || this.deps.store.getSession(raw)) throw errors.conflict(`session ${raw} already exists`);
    return raw;
  }

  private resolveSize(cols: unknown, rows: unknown): { cols: number; rows: number } {
    if (cols === undefined && rows === undefined) return { cols: DEFAULT_COLS, rows: DEFAULT_ROWS };
    const c = cols ?? DEFAULT_COLS;
    const r = rows ?? DEFAULT_ROWS;
    if (!isValidSize(c, r)) throw errors.invalid(`cols must be an integer 1..${MAX_COLS} and rows 1..${MAX_ROWS}`);
    return { cols: c as number, rows: r as number };
  }

  /** realpath inside an allowed root, or 400. */
  resolveProjectPath(raw: unknown): string {
    const roots = this.deps.config.allowedRoots;
    if (raw === undefined || raw === null) return roots[0];
    if (typeof raw !== 'string' || raw.length === 0 || raw.length > MAX_PATH_LENGTH || raw.includes('\0')) {
      throw errors.invalid('projectPath must be a non-empty path string');
    }
    if (!raw.startsWith('/')) throw errors.pathNotAllowed('projectPath must be an absolute path');
    const inRoots = (p: string) => roots.some((root) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep));
    let real: string;
    try {
      real = realpathSync(raw);
    } catch {
      // Outside the roots, a missing folder gets the same answer as an existing one: no probing for what exists there.
      if (!inRoots(realpathOfExistingPart(raw))) throw errors.pathNotAllowed(`projectPath ${raw} is outside the allowed roots (${roots.join(', ')})`);
      throw errors.invalid(`projectPath ${raw} does not exist`);
    }
    if (!inRoots(real)) throw errors.pathNotAllowed(`projectPath ${raw} is outside the allowed roots (${roots.join(', ')})`);
    if (!statSync(real).isDirectory()) throw errors.invalid(`projectPath ${raw} is not a directory`);
    return real;
  }

  /** 400 for a malformed id, 404 for an unknown one. */
  get(id: unknown): Session {
    if (!isValidSessionId(id)) throw errors.invalid('malformed session id');
    const session = this.sessions.get(id);
    if (!session) throw errors.notFound(`session ${id}`);
    return session;
  }

  /** Drops an ended session from memory (after retention removed it from the store). */
  forget(id: string): void {
    const s = this.sessions.get(id);
    if (!s || s.isLive()) return;
    s.dispose();
    this.sessions.delete(id);
    releaseMemorySoon();
  }

  find(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  list(): Session[] {
    return [...this.sessions.values()].sort((a, b) => b.record.createdAt - a.record.createdAt);
  }

  live(): Session[] {
    return this.list().filter((s) => s.isLive());
  }

  liveCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.isLive()) n++;
    return n;
  }

  /** Ends a session on a client's request; resolves once every process is gone. */
  async close(id: unknown): Promise<Session> {
    const session = this.get(id);
    await session.end('closed', 'closed by client');
    return session;
  }

  /**
   * Restarts an ended session's agent on the same conversation (its profile's
   * resume). 409 while it runs. Counts against the session limit like a new one.
   */
  async revive(session: Session, why: string): Promise<Session> {
    if (this.stopping) throw errors.stopping();
    if (session.isLive()) throw errors.conflict(`session ${session.id} is running`);
    if (this.liveCount() >= this.deps.config.maxConcurrentSessions) throw errors.sessionLimit(this.deps.config.maxConcurrentSessions);
    if (this.memoryPressure) throw errors.memoryLimit(this.memoryPressure.usedMB, this.memoryPressure.maxMB);
    resolveCommand(session.profile);
    // The folder is checked again: it may have gone, or been swapped for a link out of the roots, since the session was created.
    const stored = session.record.projectPath;
    const real = this.resolveProjectPath(stored);
    if (real !== stored) throw errors.pathNotAllowed(`projectPath ${stored} now leads to ${real}; the session cannot be revived there`);
    session.start({ revive: true });
    this.deps.logger.info({ sessionId: session.id, why, agentSessionId: session.record.agentSessionId }, 'session revived');
    return session;
  }

  monitoredSessions(): MonitoredSession[] {
    return this.live();
  }

  setMemoryPressure(pressure: { usedMB: number; maxMB: number } | null): void {
    this.memoryPressure = pressure;
  }

  get memoryPressureState(): { usedMB: number; maxMB: number } | null {
    return this.memoryPressure;
  }

  /** Ends every live session (daemon shutdown): their processes are gone when this resolves. Nothing starts after it began. */
  async shutdown(reason: string): Promise<void> {
    this.stopping = true;
    await Promise.all(this.live().map((s) => s.end('exited', reason)));
  }

  override dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
    super.dispose();
  }
}

/**
 * The real path of `p` where part of it does not exist: the longest existing
 * prefix resolved (links followed), the rest appended as written, with `..`
 * applied first.
 */
function realpathOfExistingPart(p: string): string {
  let head = resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...rest.reverse());
    } catch {
      const parent = dirname(head);
      if (parent === head) return resolve(p);
      rest.push(basename(head));
      head = parent;
    }
  }
}
