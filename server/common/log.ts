import pino, { Logger } from 'pino';

export type { Logger };

/** Paths whose values are never written to a log line. */
const REDACT = [
  'token',
  'apiToken',
  'secret',
  'hookSecret',
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  '*.token',
  '*.apiToken',
  '*.authorization',
];

/**
 * The daemon's logger; lines go to stdout unless `destination` is given.
 * Written synchronously: pino's default (buffered) stdout flushes at exit with
 * a loop that retries a broken pipe forever, so `agentd | head` hung on
 * SIGTERM once head had gone. A sync write meets the EPIPE at once, and pino
 * then stops logging instead. Log lines are few (lifecycle, not output).
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

export const silentLogger = (): Logger => pino({ level: 'silent' });
