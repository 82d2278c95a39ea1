import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../common/files';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import { Config } from '../config/schema';

export interface TokenSource {
  token: string;
  /** Where it came from, for the start-up log (never the token itself). */
  from: 'API_TOKEN' | 'file' | 'generated';
  file: string | null;
}

/** API_TOKEN if set; else DATA_DIR/token, generated (256 bits, mode 0600) on first start. */
export function ensureToken(config: Config): TokenSource {
  if (config.apiToken) return { token: config.apiToken, from: 'API_TOKEN', file: null };
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const file = join(config.dataDir, 'token');
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').trim();
    if (token.length < 16) throw new Error(`token file ${file} is empty or too short; delete it to generate a new one`);
    chmodSync(file, 0o600);
    return { token, from: 'file', file };
  }
  const token = randomBytes(32).toString('base64url');
  writeFileAtomic(file, token + '\n', { mode: 0o600, exclusive: true });
  return { token, from: 'generated', file };
}

export { tokenMatches } from '../common/tokens';

/** The bearer token of an Authorization header, or null if there is none. */
export function bearerOf(req: IncomingMessage): string | null | undefined {
  const header = req.headers.authorization;
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  return m ? m[1].trim() : null;
}

/** The host name of a Host header (port and brackets handled), lower-cased. */
export function hostNameOf(hostHeader: string | undefined): string | null {
  if (!hostHeader) return null;
  const h = hostHeader.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 ? h.slice(0, end + 1) : null;
  }
  const colon = h.lastIndexOf(':');
  return colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h;
}
