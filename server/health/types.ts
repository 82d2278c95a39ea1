/**
 * The seam between the health monitor and the sessions it watches. The
 * monitor decides (on an injected clock and sampler); the session acts.
 */

export interface ProcessTarget {
  sessionId: string;
  /** The agent's pid (root of its tree), or null if none runs. */
  rootPid: number | null;
  /** AGENTD_SESSION_TAG value: processes that left the tree carry it too. */
  tag: string;
  /** The session's terminal while its pty holds it (PtyProcess.ttyPath): those that also dropped the tag still hold it. */
  tty?: string | null;
}

export interface ResourceSample {
  /** Summed RSS of every process of the session, in bytes. */
  memoryBytes: number;
  /** Summed CPU percent of every process (100 = one core). */
  cpuPercent: number;
  pids: number[];
}

export interface ResourceSampler {
  /** One sample per target that has processes; a target with none is absent. */
  sample(targets: ProcessTarget[]): Promise<Map<string, ResourceSample>>;
}

export type EndState = 'expired' | 'killed';

export interface MonitoredSession {
  readonly id: string;
  /** True while the agent runs (starting, running, idle, busy, needs_input). */
  isLive(): boolean;
  /** Monotonic ms at creation or the last keep-alive (revival counts). */
  lifetimeStart(): number;
  /** Whether the lifetime warning was sent since the last keep-alive. */
  isWarned(): boolean;
  /** A turn is in progress: never culled for idleness. */
  isBusy(): boolean;
  clientCount(): number;
  /** Monotonic ms of the last user activity or client attach/detach (idle and LRU decisions). */
  lastActivity(): number;
  processTarget(): ProcessTarget | null;

  /** Sends the lifetime warning (frame, event, warnedAt). */
  warn(expiresAtWallMs: number): void;
  /** Ends the session (process tree ended as on close), state and reason as given. */
  end(state: EndState, reason: string): Promise<void>;
  /** Latest sample, or null when the session has no process. */
  recordUsage(sample: ResourceSample | null): void;
}

export interface MonitoredPool {
  monitoredSessions(): MonitoredSession[];
  /** While set, new sessions are refused with 503 memory_limit. */
  setMemoryPressure(pressure: { usedMB: number; maxMB: number } | null): void;
}
