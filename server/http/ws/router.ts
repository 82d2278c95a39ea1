import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { isValidSessionId } from '../../common/ids';
import { Logger } from '../../common/log';
import { ChatService } from '../../sessions/ChatService';
import { Session } from '../../sessions/Session';
import { SessionPool } from '../../sessions/SessionPool';
import { serveChat } from './chat';
import { parseOffset, serveTerminal } from './terminal';
import { awaitAuthFrame, checkUpgrade, refuse, UpgradeChecks } from './upgrade';

const TERMINAL_PATH = /^\/api\/sessions\/([^/]+)\/ws$/;
const CHAT_PATHS: Record<string, string> = { '/api/claude/ws': 'claude', '/api/codex/ws': 'codex' };
/** Close code for a session that does not exist, when only the auth frame could tell us who asked. */
const CLOSE_NOT_FOUND = 4404;

export interface UpgradeRouterDeps {
  wss: WebSocketServer;
  /** Where a request that asks to upgrade to something else than WebSocket (curl's `h2c`) is served, as a plain request. */
  plain: (req: IncomingMessage, res: ServerResponse) => void;
  pool: SessionPool;
  chat: ChatService;
  logger: Logger;
  checks: UpgradeChecks;
}

/** What a terminal socket's URL asks for, or why it is refused. */
type TerminalRequest = { ok: true; id: string; since: number | undefined; size: { cols?: number; rows?: number } } | { ok: false; message: string };

/**
 * The daemon's WebSocket routes: a terminal per session and the chat sockets,
 * each behind the Host, Origin and token checks (a first `auth` frame where
 * no header could be sent). The returned function is the server's `upgrade`
 * listener.
 */
export function upgradeRouter(deps: UpgradeRouterDeps): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const { wss, pool, chat, logger, checks, plain } = deps;
  /** Completes the upgrade, then waits for the auth frame if the client could not send a header. */
  const accept = (req: IncomingMessage, socket: Duplex, head: Buffer, needsAuthFrame: boolean, serve: (ws: WebSocket) => Promise<void> | void) => {
    wss.handleUpgrade(req, socket, head, async (ws) => {
      wss.emit('connection', ws, req);
      if (needsAuthFrame && !(await awaitAuthFrame(ws, checks.token))) return;
      await serve(ws);
    });
  };

  const route = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (req.headers.upgrade?.toLowerCase() !== 'websocket') return servePlain(req, socket, plain);
    const url = parseTarget(req.url);
    if (!url) return refuse(socket, 400, 'invalid_request', 'malformed request target');
    const terminal = TERMINAL_PATH.exec(url.pathname);
    const chatAgent = CHAT_PATHS[url.pathname];
    if (!terminal && !chatAgent) return refuse(socket, 404, 'not_found', `no WebSocket route ${url.pathname}`);
    const checked = checkUpgrade(req, socket, checks);
    if (!checked.ok) return;
    const problem = handshakeProblem(req);
    if (problem) return refuse(socket, 400, 'invalid_request', problem);
    if (chatAgent) return accept(req, socket, head, checked.needsAuthFrame, (ws) => serveChat(ws, chatAgent, { chat, logger }));

    const asked = terminalRequest(terminal![1], url.searchParams);
    if (!asked.ok) return refuse(socket, 400, 'invalid_request', asked.message);
    const { id, since, size } = asked;
    if (!checked.needsAuthFrame && !pool.find(id)) return refuse(socket, 404, 'not_found', `session ${id} not found`);
    accept(req, socket, head, checked.needsAuthFrame, async (ws) => {
      const session = pool.find(id);
      if (!session) return ws.close(CLOSE_NOT_FOUND, 'session not found');
      try {
        await serveTerminal(ws, session, { since, ...size }, { chat, logger, onRevive: (s) => reviveOnAttach(pool, s) });
      } catch (err) {
        logger.warn({ sessionId: id, err: (err as Error).message }, 'attach failed');
        ws.close(1011, 'attach failed');
      }
    });
  };

  return (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    try {
      route(req, socket, head);
    } catch (err) {
      // Nothing a client sends may take the daemon down.
      logger.error({ err: (err as Error).message }, 'upgrade failed');
      refuse(socket, 500, 'internal', 'internal error');
    }
  };
}

/** The request target as a URL, or null when it cannot be one. */
export function parseTarget(target: string | undefined): URL | null {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}

/** What ws would refuse in plain text, refused here in the contract's shape instead (RFC 6455 §4.2.1). */
function handshakeProblem(req: IncomingMessage): string | null {
  if (req.method !== 'GET') return 'a WebSocket upgrade must be a GET';
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !/^[A-Za-z0-9+/]{22}==$/.test(key.trim())) return 'missing or invalid Sec-WebSocket-Key';
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return 'Sec-WebSocket-Version must be 13 (or 8)';
  return null;
}

/**
 * Serves an `Upgrade: h2c` (or any non-WebSocket upgrade) request as the plain
 * HTTP/1.1 request it also is: a server may ignore Upgrade (RFC 9110 §7.8).
 * Only without a body: Node has already taken the socket out of HTTP parsing.
 */
function servePlain(req: IncomingMessage, socket: Duplex, plain: (req: IncomingMessage, res: ServerResponse) => void): void {
  const hasBody = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined;
  if (hasBody) return refuse(socket, 400, 'invalid_request', `Upgrade: ${req.headers.upgrade} is not supported; send the request without it`);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  res.on('finish', () => {
    res.detachSocket(socket as Socket);
    socket.end();
  });
  plain(req, res);
}

/** The session id, the resume offset and the client's terminal size from a terminal socket's URL. */
function terminalRequest(rawId: string, params: URLSearchParams): TerminalRequest {
  let id: string;
  try {
    id = decodeURIComponent(rawId);
  } catch {
    return { ok: false, message: 'malformed session id' };
  }
  if (!isValidSessionId(id)) return { ok: false, message: 'malformed session id' };
  const since = parseOffset(params.get('since'));
  if (Number.isNaN(since)) return { ok: false, message: 'since must be a non-negative integer' };
  const cols = parseOffset(params.get('cols'));
  const rows = parseOffset(params.get('rows'));
  // A size that is absent, half given or out of the resize bounds is ignored, not refused (docs/PROTOCOL.md).
  const size = cols !== undefined && rows !== undefined && cols >= 1 && cols <= 1000 && rows >= 1 && rows <= 500 ? { cols, rows } : {};
  return { ok: true, id, since, size };
}

/** Attaching to a session that was live when the daemon stopped brings it back. */
async function reviveOnAttach(pool: SessionPool, session: Session): Promise<void> {
  if (session.isLive() || session.record.endReason !== 'daemon_stopped') return;
  await pool.revive(session, 'attach');
}
