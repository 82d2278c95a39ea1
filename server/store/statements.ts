import type Database from 'better-sqlite3';
import type { SessionEvent, SessionRecord, TurnRecord } from './SessionStore';

/**
 * Every statement the SQLite store runs, prepared once. Columns are aliased
 * to the record's field names so rows come back as records and records bind
 * as named parameters.
 */

const SESSION_COLUMNS = `id, agent, project_path AS projectPath, state, pid, pid_start_time AS pidStartTime, tag,
  agent_session_id AS agentSessionId, created_at AS createdAt, last_activity_at AS lastActivityAt,
  expires_at AS expiresAt, warned_at AS warnedAt, ended_at AS endedAt, cols, rows, exit_code AS exitCode,
  signal, end_reason AS endReason, device_token AS deviceToken, output_bytes AS outputBytes`;

const TURN_COLUMNS = `id, session_id AS sessionId, kind, prompt, response, status, started_at AS startedAt,
  ended_at AS endedAt, device_id AS deviceId`;

export interface OutputRow {
  start: number;
  end: number;
  compressed: number;
  data: Buffer;
}

export interface SnapshotRow {
  offset: number;
  cols: number;
  rows: number;
  createdAt: number;
  data: Buffer;
}

export interface EventRow {
  sessionId: string;
  type: SessionEvent['type'];
  at: number;
  detail: string | null;
}

export function prepareStatements(db: Database.Database) {
  return {
    listSessions: db.prepare<[], SessionRecord>(`SELECT ${SESSION_COLUMNS} FROM sessions`),
    getSession: db.prepare<[string], SessionRecord>(`SELECT ${SESSION_COLUMNS} FROM sessions WHERE id = ?`),
    putSession: db.prepare<[SessionRecord]>(
      `INSERT INTO sessions (id, agent, project_path, state, pid, pid_start_time, tag, agent_session_id, created_at,
         last_activity_at, expires_at, warned_at, ended_at, cols, rows, exit_code, signal, end_reason, device_token, output_bytes)
       VALUES (@id, @agent, @projectPath, @state, @pid, @pidStartTime, @tag, @agentSessionId, @createdAt,
         @lastActivityAt, @expiresAt, @warnedAt, @endedAt, @cols, @rows, @exitCode, @signal, @endReason, @deviceToken, @outputBytes)
       ON CONFLICT (id) DO UPDATE SET agent = excluded.agent, project_path = excluded.project_path, state = excluded.state,
         pid = excluded.pid, pid_start_time = excluded.pid_start_time, tag = excluded.tag,
         agent_session_id = excluded.agent_session_id, created_at = excluded.created_at,
         last_activity_at = excluded.last_activity_at, expires_at = excluded.expires_at, warned_at = excluded.warned_at,
         ended_at = excluded.ended_at, cols = excluded.cols, rows = excluded.rows, exit_code = excluded.exit_code,
         signal = excluded.signal, end_reason = excluded.end_reason, device_token = excluded.device_token,
         output_bytes = excluded.output_bytes`,
    ),
    raiseOutputBytes: db.prepare<[number, string]>('UPDATE sessions SET output_bytes = MAX(output_bytes, ?) WHERE id = ?'),
    deleteOutput: db.prepare<[string]>('DELETE FROM output WHERE session_id = ?'),
    /** Everything of a session, table by table. */
    deleteSession: [
      db.prepare<[string]>('DELETE FROM sessions WHERE id = ?'),
      db.prepare<[string]>('DELETE FROM output WHERE session_id = ?'),
      db.prepare<[string]>('DELETE FROM snapshots WHERE session_id = ?'),
      db.prepare<[string]>('DELETE FROM turns WHERE session_id = ?'),
      db.prepare<[string]>('DELETE FROM events WHERE session_id = ?'),
    ],

    firstChunk: db.prepare<[string], { start: number; end: number }>(
      'SELECT start_offset AS start, end_offset AS end FROM output WHERE session_id = ? ORDER BY end_offset ASC LIMIT 1',
    ),
    lastChunk: db.prepare<[string], { start: number; end: number }>(
      'SELECT start_offset AS start, end_offset AS end FROM output WHERE session_id = ? ORDER BY end_offset DESC LIMIT 1',
    ),
    readOutput: db.prepare<[string, number, number], OutputRow>(
      `SELECT start_offset AS start, end_offset AS end, compressed, data FROM output
       WHERE session_id = ? AND end_offset > ? AND start_offset < ? ORDER BY end_offset`,
    ),
    insertChunk: db.prepare<[string, number, number, number, Buffer]>(
      'INSERT INTO output (session_id, start_offset, end_offset, compressed, data) VALUES (?, ?, ?, ?, ?)',
    ),
    /** Start, end and kind of the rows that lie within [start, end) (both row boundaries). */
    rowsIn: db.prepare<[string, number, number], { start: number; end: number; compressed: number }>(
      'SELECT start_offset AS start, end_offset AS end, compressed FROM output WHERE session_id = ? AND end_offset > ? AND end_offset <= ? ORDER BY end_offset',
    ),
    /** End of the newest row that needs no compaction (gzip of schema 1, or a segment). */
    lastSettledEnd: db.prepare<[string], { end: number }>(
      'SELECT end_offset AS end FROM output WHERE session_id = ? AND (compressed IN (1, 3) OR (compressed = 0 AND end_offset - start_offset >= 16384)) ORDER BY end_offset DESC LIMIT 1',
    ),
    /** Deletes the rows that lie within [start, end) (both row boundaries). */
    deleteChunksIn: db.prepare<[string, number, number]>('DELETE FROM output WHERE session_id = ? AND end_offset > ? AND end_offset <= ?'),
    /** Drops every chunk that ends at or before the given offset. */
    dropChunksBefore: db.prepare<[string, number]>('DELETE FROM output WHERE session_id = ? AND end_offset <= ?'),

    insertSnapshot: db.prepare<[string, number, number, number, number, Buffer]>(
      'INSERT INTO snapshots (session_id, output_offset, cols, rows, created_at, data) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    keepNewestSnapshots: db.prepare<[string, string, number]>(
      `DELETE FROM snapshots WHERE session_id = ? AND rowid NOT IN (
         SELECT rowid FROM snapshots WHERE session_id = ? ORDER BY output_offset DESC, rowid DESC LIMIT ?)`,
    ),
    latestSnapshot: db.prepare<[string, number], SnapshotRow>(
      `SELECT output_offset AS offset, cols, rows, created_at AS createdAt, data FROM snapshots
       WHERE session_id = ? AND output_offset <= ? ORDER BY output_offset DESC, rowid DESC LIMIT 1`,
    ),

    insertEvent: db.prepare<[string, string, number, string | null]>(
      'INSERT INTO events (session_id, type, at, detail) VALUES (?, ?, ?, ?)',
    ),
    listEvents: db.prepare<[string], EventRow>(
      'SELECT session_id AS sessionId, type, at, detail FROM events WHERE session_id = ? ORDER BY at, id',
    ),

    putTurn: db.prepare<[TurnRecord]>(
      `INSERT INTO turns (id, session_id, kind, prompt, response, status, started_at, ended_at, device_id)
       VALUES (@id, @sessionId, @kind, @prompt, @response, @status, @startedAt, @endedAt, @deviceId)
       ON CONFLICT (id) DO UPDATE SET session_id = excluded.session_id, kind = excluded.kind, prompt = excluded.prompt,
         response = excluded.response, status = excluded.status, started_at = excluded.started_at,
         ended_at = excluded.ended_at, device_id = excluded.device_id`,
    ),
    listTurns: db.prepare<[string], TurnRecord>(`SELECT ${TURN_COLUMNS} FROM turns WHERE session_id = ? ORDER BY started_at, rowid`),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;
