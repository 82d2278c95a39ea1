-- Schema 1: sessions with their output history, screen snapshots, turns and events.
-- Applied by server/store/migrate.ts inside one transaction, which then sets
-- PRAGMA user_version = 1. Times are epoch milliseconds; offsets are byte
-- positions in a session's output stream.

CREATE TABLE sessions (
  id               TEXT PRIMARY KEY,
  agent            TEXT NOT NULL,
  project_path     TEXT NOT NULL,
  state            TEXT NOT NULL,
  pid              INTEGER,
  pid_start_time   INTEGER,
  tag              TEXT,
  agent_session_id TEXT,
  created_at       INTEGER NOT NULL,
  last_activity_at INTEGER NOT NULL,
  expires_at       INTEGER,
  warned_at        INTEGER,
  ended_at         INTEGER,
  cols             INTEGER NOT NULL,
  rows             INTEGER NOT NULL,
  exit_code        INTEGER,
  signal           INTEGER,
  end_reason       TEXT,
  device_token     TEXT,
  output_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_created ON sessions (created_at);
CREATE INDEX sessions_by_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;

-- Output history: bytes [start_offset, end_offset) of a session's stream,
-- gzip-compressed when `compressed` = 1. Chunks of one session are contiguous
-- and never overlap; the oldest are dropped to keep the history capped.
CREATE TABLE output (
  session_id   TEXT NOT NULL,
  start_offset INTEGER NOT NULL,
  end_offset   INTEGER NOT NULL,
  compressed   INTEGER NOT NULL,
  data         BLOB NOT NULL
);
CREATE UNIQUE INDEX output_by_session_end ON output (session_id, end_offset);

-- Serialized screens (gzip-compressed text); only the newest few per session are kept.
CREATE TABLE snapshots (
  session_id TEXT NOT NULL,
  output_offset INTEGER NOT NULL,
  cols       INTEGER NOT NULL,
  rows       INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  data       BLOB NOT NULL
);
CREATE INDEX snapshots_by_session_offset ON snapshots (session_id, output_offset);

CREATE TABLE turns (
  id         TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  kind       TEXT NOT NULL,
  prompt     TEXT NOT NULL,
  response   TEXT,
  status     TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at   INTEGER,
  device_id  TEXT
);
CREATE INDEX turns_by_session ON turns (session_id, started_at);

CREATE TABLE events (
  id         INTEGER PRIMARY KEY,
  session_id TEXT NOT NULL,
  type       TEXT NOT NULL,
  at         INTEGER NOT NULL,
  detail     TEXT
);
CREATE INDEX events_by_session ON events (session_id, at);
