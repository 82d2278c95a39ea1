/**
 * What the domain keeps about sessions, behind one interface. The in-memory
 * implementation serves tests and the first issue; the SQLite one (issue 3)
 * persists it across crashes. Implementations must never block the output
 * path for long: `appendOutput` only queues, a batched writer flushes.
 */

export type SessionState =
  | 'starting'
  | 'running'
  | 'idle'
  | 'busy'
  | 'needs_input'
  | 'exited'
  | 'expired'
  | 'killed'
  | 'closed'
  | 'failed';

export const LIVE_STATES: ReadonlySet<SessionState> = new Set(['starting', 'running', 'idle', 'busy', 'needs_input']);

export interface SessionRecord {
  id: string;
  /** Profile name (`claude`, `codex`, `shell`, or a configured one). */
  agent: string;
  projectPath: string;
  state: SessionState;
  pid: number | null;
  /** /proc start time of `pid` (clock ticks since boot), to tell a reused pid apart. */
  pidStartTime: number | null;
  /** Value of AGENTD_SESSION_TAG in every process of the session. */
  tag: string | null;
  /** The agent's own conversation id (claude session uuid, codex thread id). */
  agentSessionId: string | null;
  createdAt: number;
  lastActivityAt: number;
  expiresAt: number | null;
  warnedAt: number | null;
  endedAt: number | null;
  cols: number;
  rows: number;
  exitCode: number | null;
  signal: number | null;
  endReason: string | null;
  deviceToken: string | null;
  /** Total bytes the session has ever written (the output stream's end offset). */
  outputBytes: number;
}

export interface OutputSlice {
  /** Offset of the first byte of `data`. */
  offset: number;
  data: Buffer;
}

export interface ScreenSnapshot {
  sessionId: string;
  /** Output position the serialized screen corresponds to. */
  offset: number;
  cols: number;
  rows: number;
  /** Serialized screen and scrollback (ANSI), as produced by @xterm/addon-serialize. */
  data: string;
  createdAt: number;
}

export type SessionEventType =
  | 'created'
  | 'attached'
  | 'detached'
  | 'warned'
  | 'keep_alive'
  | 'expired'
  | 'killed'
  | 'closed'
  | 'exited'
  | 'failed'
  | 'revived'
  | 'culled';

export interface SessionEvent {
  sessionId: string;
  type: SessionEventType;
  at: number;
  detail: Record<string, unknown> | null;
}

export type TurnStatus = 'running' | 'completed' | 'interrupted';

export interface TurnRecord {
  id: string;
  sessionId: string;
  /** `chat` for a message, `recap` for a keep-alive recap. */
  kind: 'chat' | 'recap';
  prompt: string;
  response: string | null;
  status: TurnStatus;
  startedAt: number;
  endedAt: number | null;
  deviceId: string | null;
}

export interface StoreHealth {
  status: 'ok' | 'degraded';
  /** Why it is degraded, e.g. "disk full: 3 batches pending". */
  detail?: string;
}

export interface SessionStore {
  /** Every stored session, newest first. */
  listSessions(): SessionRecord[];
  getSession(id: string): SessionRecord | undefined;
  /** Inserts or replaces the session's metadata. */
  putSession(record: SessionRecord): void;
  deleteSession(id: string): void;

  /**
   * Queues output bytes at their stream offset; never waits on disk. The
   * store keeps a reference to `data` until it is written: the caller must
   * not change it afterwards (a PTY's chunks are fresh buffers).
   */
  appendOutput(sessionId: string, offset: number, data: Buffer): void;
  /**
   * Stored output from `from` (inclusive) to `to` (exclusive, default: end).
   * Returns null if the bytes at `from` are no longer kept.
   */
  readOutput(sessionId: string, from: number, to?: number): OutputSlice | null;
  /** First and end offsets of the stored output. */
  outputRange(sessionId: string): { start: number; end: number };

  putSnapshot(snapshot: ScreenSnapshot): void;
  /** The newest snapshot at or before `atOrBefore` (default: any). */
  latestSnapshot(sessionId: string, atOrBefore?: number): ScreenSnapshot | undefined;

  addEvent(event: SessionEvent): void;
  listEvents(sessionId: string): SessionEvent[];

  putTurn(turn: TurnRecord): void;
  listTurns(sessionId: string): TurnRecord[];

  /** Removes sessions ended more than `olderThanMs` before `nowMs`, with all their rows; returns how many. */
  pruneEnded?(olderThanMs: number, nowMs: number): number;

  /** Writes everything queued now. */
  flush(): void | boolean;
  health(): StoreHealth;
  close(): void;
}
