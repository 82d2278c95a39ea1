import { randomUUID } from 'node:crypto';

/** The contract's session id pattern. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export function isValidSessionId(id: unknown): id is string {
  return typeof id === 'string' && SESSION_ID_PATTERN.test(id);
}

export function newId(): string {
  return randomUUID();
}
