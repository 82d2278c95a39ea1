import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { COMMON_HEADERS, ErrorCode, errorBody } from '../../common/errors';
import { bearerOf, hostNameOf, tokenMatches } from '../auth';

/** Largest frame a client may send; larger closes with 1009 (contract). */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
/** Browsers cannot set headers: they must authenticate with a first frame within this time. */
export const AUTH_FRAME_TIMEOUT_MS = 5_000;
/** Ping interval; a client that has not answered the previous ping is dropped. */
export const PING_INTERVAL_MS = 15_000;

export const CLOSE_UNAUTHORIZED = 4401;

/** Refuses an upgrade with a plain HTTP answer in the contract's error shape. */
export function refuse(socket: Duplex, status: number, code: ErrorCode, message: string, headers: Record<string, string | number> = {}): void {
  const body = JSON.stringify(errorBody(code, message));
  const extra = Object.entries({ ...COMMON_HEADERS, ...headers }).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
  );
}

export interface UpgradeChecks {
  ownNames: Set<string>;
  allowedOrigins: () => Set<string>;
  token: string;
}

/**
 * Host, Origin and Authorization checks before the upgrade. Returns whether the
 * client still has to authenticate with a first frame (no header was sent).
 */
export function checkUpgrade(req: IncomingMessage, socket: Duplex, checks: UpgradeChecks): { ok: false } | { ok: true; needsAuthFrame: boolean } {
  const host = hostNameOf(req.headers.host);
  if (!host || !checks.ownNames.has(host)) {
    refuse(socket, 403, 'forbidden', "Host is not one of this daemon's names");
    return { ok: false };
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !checks.allowedOrigins().has(origin)) {
    refuse(socket, 403, 'forbidden', `Origin ${origin} is not allowed`);
    return { ok: false };
  }
  const bearer = bearerOf(req);
  if (bearer !== undefined) {
    if (!tokenMatches(checks.token, bearer)) {
      refuse(socket, 401, 'unauthorized', 'a valid bearer token is required');
      return { ok: false };
    }
    return { ok: true, needsAuthFrame: false };
  }
  return { ok: true, needsAuthFrame: true };
}

/**
 * Waits for `{"type":"auth","token":"…"}` as the first frame. Nothing is sent
 * before it; a wrong or missing one closes with 4401.
 */
export function awaitAuthFrame(ws: WebSocket, token: string): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ws.off('message', onMessage);
      ws.close(CLOSE_UNAUTHORIZED, 'unauthorized');
      resolve(false);
    }, AUTH_FRAME_TIMEOUT_MS);
    const onMessage = (data: Buffer, isBinary: boolean) => {
      clearTimeout(timer);
      let ok = false;
      if (!isBinary) {
        try {
          const frame = JSON.parse(data.toString('utf8'));
          ok = frame?.type === 'auth' && tokenMatches(token, frame.token);
        } catch {
          ok = false;
        }
      }
      if (!ok) ws.close(CLOSE_UNAUTHORIZED, 'unauthorized');
      resolve(ok);
    };
    ws.once('message', onMessage);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** Pings every client; one that missed the previous pong is terminated. */
export function startHeartbeat(wss: WebSocketServer): () => void {
  const alive = new WeakMap<WebSocket, boolean>();
  wss.on('connection', (ws) => {
    alive.set(ws, true);
    ws.on('pong', () => alive.set(ws, true));
  });
  const timer = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, PING_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
