import { SessionOutput } from './SessionOutput';
import type {
  OutputSlice,
  ScreenSnapshot,
  SessionEvent,
  SessionRecord,
  SessionStore,
  StoreHealth,
  TurnRecord,
} from './SessionStore';

export interface MemoryStoreOptions {
  /** Output kept per session; the oldest appended pieces beyond it are dropped. Default 50 MiB. */
  maxHistoryBytes?: number;
  /** Snapshots kept per session, newest by offset. Default 3. */
  snapshotsKept?: number;
}

/**
 * The session store in memory: for unit tests, and the reference the SQLite
 * store must behave like (same ordering, same output semantics: overlaps are
 * skipped, a gap restarts the history, the cap drops the oldest pieces).
 */
export class MemoryStore implements SessionStore {
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly outputs = new Map<string, SessionOutput>();
  private readonly snapshots = new Map<string, ScreenSnapshot[]>();
  private readonly events = new Map<string, SessionEvent[]>();
  private readonly turns = new Map<string, Map<string, TurnRecord>>();
  private readonly maxHistoryBytes: number;
  private readonly snapshotsKept: number;

  constructor(options: MemoryStoreOptions = {}) {
    this.maxHistoryBytes = options.maxHistoryBytes ?? 50 * 1024 * 1024;
    this.snapshotsKept = options.snapshotsKept ?? 3;
  }

  listSessions(): SessionRecord[] {
    return [...this.sessions.values()]
      .map((r) => this.withOutputBytes(r))
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  getSession(id: string): SessionRecord | undefined {
    const record = this.sessions.get(id);
    return record && this.withOutputBytes(record);
  }

  putSession(record: SessionRecord): void {
    this.sessions.set(record.id, { ...record });
  }

  deleteSession(id: string): void {
    for (const map of [this.sessions, this.outputs, this.snapshots, this.events, this.turns]) map.delete(id);
  }

  /** Removes sessions that ended more than `olderThanMs` before `nowMs`; returns how many. */
  pruneEnded(olderThanMs: number, nowMs: number): number {
    const ended = [...this.sessions.values()].filter((s) => s.endedAt !== null && s.endedAt < nowMs - olderThanMs);
    for (const s of ended) this.deleteSession(s.id);
    return ended.length;
  }

  appendOutput(sessionId: string, offset: number, data: Buffer): void {
    if (data.length > 0) this.outputOf(sessionId).append(offset, data, this.maxHistoryBytes, 0);
  }

  readOutput(sessionId: string, from: number, to?: number): OutputSlice | null {
    const output = this.outputs.get(sessionId) ?? SessionOutput.empty();
    if (from < output.start) return null;
    const stop = Math.min(to ?? output.end, output.end);
    return { offset: from, data: from >= stop ? Buffer.alloc(0) : Buffer.concat(output.memorySlices(from, stop)) };
  }

  outputRange(sessionId: string): { start: number; end: number } {
    const output = this.outputs.get(sessionId) ?? SessionOutput.empty();
    return { start: output.start, end: output.end };
  }

  putSnapshot(snapshot: ScreenSnapshot): void {
    // Newest by offset first; on equal offsets the later one first (the sort is stable).
    const list = [{ ...snapshot }, ...(this.snapshots.get(snapshot.sessionId) ?? [])].sort((a, b) => b.offset - a.offset);
    this.snapshots.set(snapshot.sessionId, list.slice(0, this.snapshotsKept));
  }

  latestSnapshot(sessionId: string, atOrBefore = Number.MAX_SAFE_INTEGER): ScreenSnapshot | undefined {
    const found = this.snapshots.get(sessionId)?.find((s) => s.offset <= atOrBefore);
    return found && { ...found };
  }

  addEvent(event: SessionEvent): void {
    // Through JSON, as the SQLite store keeps `detail`, so both read back the same.
    const copy = { ...event, detail: event.detail === null ? null : (JSON.parse(JSON.stringify(event.detail)) as Record<string, unknown>) };
    this.events.set(event.sessionId, [...(this.events.get(event.sessionId) ?? []), copy]);
  }

  listEvents(sessionId: string): SessionEvent[] {
    return (this.events.get(sessionId) ?? []).map((e) => ({ ...e, detail: e.detail && structuredClone(e.detail) })).sort((a, b) => a.at - b.at);
  }

  putTurn(turn: TurnRecord): void {
    const turns = this.turns.get(turn.sessionId) ?? new Map<string, TurnRecord>();
    turns.set(turn.id, { ...turn });
    this.turns.set(turn.sessionId, turns);
  }

  listTurns(sessionId: string): TurnRecord[] {
    return [...(this.turns.get(sessionId)?.values() ?? [])].map((t) => ({ ...t })).sort((a, b) => a.startedAt - b.startedAt);
  }

  flush(): void {
    // Nothing is queued: every write is already where reads look.
  }

  health(): StoreHealth {
    return { status: 'ok' };
  }

  close(): void {
    // Holds no handle.
  }

  private outputOf(sessionId: string): SessionOutput {
    let output = this.outputs.get(sessionId);
    if (!output) {
      output = SessionOutput.empty();
      this.outputs.set(sessionId, output);
    }
    return output;
  }

  private withOutputBytes(record: SessionRecord): SessionRecord {
    return { ...record, outputBytes: Math.max(record.outputBytes, this.outputs.get(record.id)?.end ?? 0) };
  }
}
