import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The daemon's side of hook-relay.js: where it is, how to run it, and what
 * it sends. The relay stays plain JS outside the TypeScript build so that it
 * starts fast; from dist/ it is found back in the source tree.
 */

/** Environment variables the daemon sets in the agent's environment; hooks and notify inherit them. */
export const HOOK_URL_ENV = 'AGENTD_HOOK_URL';
export const HOOK_SECRET_ENV = 'AGENTD_HOOK_SECRET';
export const HOOK_SESSION_ENV = 'AGENTD_SESSION_ID';

/** Header carrying the per-session secret (compare it in constant time). */
export const HOOK_SECRET_HEADER = 'x-agentd-hook-secret';
export const HOOK_SESSION_HEADER = 'x-agentd-session-id';

/** The JSON body the relay POSTs. `payload` is the agent's JSON (parsed), a string when it was not JSON, or `{truncated: true}`. */
export interface HookPost {
  event: string;
  sessionId: string;
  payload: unknown;
}

/** The event name codex's notify runs the relay with. */
export const CODEX_NOTIFY_EVENT = 'CodexNotify';

const RELAY = 'hook-relay.js';

/** Absolute path of hook-relay.js, from the sources (ts-jest) or from dist/server/agents. */
export function hookRelayPath(): string {
  const candidates = [join(__dirname, RELAY), join(__dirname, '..', '..', '..', 'server', 'agents', RELAY)];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`${RELAY} not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** argv that runs the relay with this very Node; claude appends the event name, codex gets `CodexNotify`. */
export function hookRelayCommand(): string[] {
  return [process.execPath, hookRelayPath()];
}

export function codexNotifyCommand(): string[] {
  return [...hookRelayCommand(), CODEX_NOTIFY_EVENT];
}

/** Reads a relay body; null when it is not one. */
export function parseHookPost(body: unknown): HookPost | null {
  if (!body || typeof body !== 'object') return null;
  const b = body as Record<string, unknown>;
  if (typeof b.event !== 'string' || typeof b.sessionId !== 'string') return null;
  return { event: b.event, sessionId: b.sessionId, payload: b.payload };
}
