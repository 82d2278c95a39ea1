import { randomUUID } from 'node:crypto';

/** The contract's session id pattern. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** What a request body is told when its `sessionId` is not a session id (a path says "malformed session id"). */
export const SESSION_ID_RULE = `sessionId must match ${SESSION_ID_PATTERN.source}`;

export function isValidSessionId(id: unknown): id is string {
  return typeof id === 'string' && SESSION_ID_PATTERN.test(id);
}

export function newId(): string {
  return randomUUID();
}
