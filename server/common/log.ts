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

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

export const silentLogger = (): Logger => pino({ level: 'silent' });
