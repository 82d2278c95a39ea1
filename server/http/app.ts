import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { WebSocketServer } from 'ws';
import { Clock, systemClock } from '../common/clock';
import { isValidSessionId } from '../common/ids';
import { VERSION } from '../common/version';
import { Logger } from '../common/log';
import { ownHostNames } from '../config/load';
import { Config } from '../config/schema';
import { AgentRegistry } from '../agents/profiles';
import { AgentStatus, probeAgents } from '../agents/status';
import { NodePtyBackend } from '../pty/NodePtyBackend';
import { ReadThread } from '../pty/ReadThread';
import { PtyBackend } from '../pty/PtyBackend';
import { ChatService } from '../sessions/ChatService';
import { ScreenService } from '../sessions/ScreenService';
import { Session } from '../sessions/Session';
import { SessionPool } from '../sessions/SessionPool';
import { SessionStore } from '../store/SessionStore';
import { HealthMonitor } from '../health/HealthMonitor';
import { AppContext } from './context';
import { ConnectionCap, CONNECTIONS_CHECK_MS, HEADERS_TIMEOUT_MS } from './connections';
import { errorHandler, notFoundHandler } from './errorHandler';
import { hostCheck, jsonBody, requireToken } from './middleware';
import { HOOK_SECRET_HEADER, parseHookPost } from '../agents/relay';
import { sessionRoutes } from './routes';
import { parseTarget, upgradeRouter } from './ws/router';
import { MAX_PAYLOAD_BYTES, refuse, startHeartbeat } from './ws/upgrade';
import { COMMON_HEADERS, ErrorCode, errorBody } from '../common/errors';
import type { Duplex } from 'node:stream';

export interface AppDeps {
  logger: Logger;
  store: SessionStore;
  token: string;
  clock?: Clock;
  backend?: PtyBackend;
  /** How long request headers may take to arrive (tests shorten it). */
  headersTimeoutMs?: number;
}

export interface App {
  server: Server;
  /** Loads stored sessions (after a restart) and starts the retention sweep. */
  restore(): Promise<void>;
  context: AppContext;
  pool: SessionPool;
  /** The sessions' screen models (diagnostics, tests). */
  screen: ScreenService;
  /** Ends every session's processes, closes sockets and the server, frees every timer. */
  dispose(): Promise<void>;
}

/** How long a client may take to answer our close frame at shutdown before its socket is cut. */
const CLOSE_GRACE_MS = 1_000;
/** Ended sessions past RETENTION_DAYS are removed at start-up and then daily. */
const RETENTION_SWEEP_MS = 24 * 3_600_000;

/** Builds the daemon without listening: `main` listens; tests build their own on port 0. */
export function createApp(config: Config, deps: AppDeps): App {
  const logger = deps.logger;
  const clock = deps.clock ?? systemClock;
  const agents = new AgentRegistry(config.agents);
  const screen = new ScreenService();
  const hookUrl = () => {
    const port = (server.address() as AddressInfo | null)?.port ?? config.port;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}/api/hooks`;
  };
  // Terminals whose output floods are read on this thread (started with the first session).
  const reader = new ReadThread();
  const pool = new SessionPool({ hookUrl, config, backend: deps.backend ?? new NodePtyBackend(reader), store: deps.store, screen, clock, logger, agents });
  const chat = new ChatService(pool, config, logger.child({ component: 'chat' }));
  const monitor = new HealthMonitor(config, { clock, pool, logger });
  monitor.start();
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD_BYTES, perMessageDeflate: false });
  const stopHeartbeat = startHeartbeat(wss);
  const ownNames = ownHostNames(config);
  let agentStatus: Record<string, AgentStatus> | null = null;

  const context: AppContext = {
    config,
    logger,
    pool,
    store: deps.store,
    token: deps.token,
    startedAt: clock.now(),
    version: VERSION,
    connections: () => wss.clients.size,
    memoryUsedMB: () => monitor.memory.usedMB,
    sessionView: (s) => s.toJSON(),
    history: (s) => historyOf(deps.store, s),
    messages: (s) => chat.messages(s, deps.store.listTurns(s.id)),
    answer: (s, option) => s.chat.answer(option),
    keepAlive: (s, recap) => chat.keepAlive(s, recap),
    revive: async (s, why) => {
      await pool.revive(s, why);
    },
    chat: (req) => chat.chat(req),
    health: async () => {
      agentStatus ??= await probeAgents(agents, agents.names());
      const store = deps.store.health();
      return {
        status: store.status,
        ...(store.detail ? { detail: store.detail } : {}),
        version: VERSION,
        uptimeSeconds: Math.round((clock.now() - context.startedAt) / 1000),
        sessions: { active: pool.liveCount(), total: pool.list().length },
        connections: wss.clients.size,
        agents: agentStatus,
        monitor: monitorStatus(monitor, config.healthCheckIntervalSeconds),
      };
    },
  };

  const rest = expressApp(context, { ownNames, token: deps.token, logger });
  const cap = new ConnectionCap(config.maxConnections, logger);
  const headersTimeout = deps.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const serverOptions = { headersTimeout, connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_MS, headersTimeout) };
  const server = createServer(serverOptions, (req, res) => {
    if (cap.isOver(req)) return answerAndClose(res, 503, 'unavailable', cap.refusal.message, cap.refusal.headers);
    // A target no URL can be made of never reaches express (it would answer with its own HTML page).
    if (!parseTarget(req.url)) return answerAndClose(res, 400, 'invalid_request', 'malformed request target');
    rest(req, res);
  });
  // What Node's HTTP parser refuses (headers too large, bad syntax) is answered in the contract's shape too.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    if (err.code === 'HPE_HEADER_OVERFLOW') refuse(socket, 431, 'invalid_request', 'request headers are too large');
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') refuse(socket, 408, 'invalid_request', `the request did not arrive in time (its headers within ${headersTimeout / 1000} s)`);
    else refuse(socket, 400, 'invalid_request', 'malformed HTTP request');
  });
  cap.attach(server);
  const allowedOrigins = () => {
    if (config.allowedOrigins.length) return new Set(config.allowedOrigins);
    const port = (server.address() as AddressInfo | null)?.port;
    return new Set(['localhost', '127.0.0.1', '[::1]', config.host].map((h) => `http://${h}:${port}`));
  };
  const routeUpgrade = upgradeRouter({ wss, pool, chat, logger, plain: rest, checks: { ownNames, allowedOrigins, token: deps.token } });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (cap.isOver(req)) refuse(socket, 503, 'unavailable', cap.refusal.message, cap.refusal.headers);
    else routeUpgrade(req, socket, head);
  });

  let disposed = false;
  let retention: NodeJS.Timeout | null = null;
  const prune = () => {
    const removed = deps.store.pruneEnded?.(config.retentionDays * 86_400_000, clock.now()) ?? 0;
    for (const s of pool.list()) if (!deps.store.getSession(s.id) && !s.isLive()) pool.forget(s.id);
    if (removed) logger.info({ removed, retentionDays: config.retentionDays }, 'removed sessions past retention');
  };
  return {
    server,
    async restore() {
      if (config.retentionDays > 0) prune();
      await pool.restore();
      if (config.retentionDays > 0) {
        retention = setInterval(prune, RETENTION_SWEEP_MS);
        retention.unref();
      }
    },
    context,
    pool,
    screen,
    async dispose() {
      if (disposed) return;
      disposed = true;
      // No new connections from here: a client that reconnects as soon as it is told 1001 finds the port closed.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      if (retention) clearInterval(retention);
      monitor.dispose();
      stopHeartbeat();
      await pool.shutdown('daemon_stopped');
      // Clients are told (1001) and gone before the sessions and the store are, so no late close event finds them closed.
      await closeClients(wss);
      wss.close();
      server.closeAllConnections();
      await closed;
      pool.dispose();
      screen.dispose();
      await reader.dispose();
    },
  };
}

/** An error answer written before express, in the contract's shape; the connection closes after it. */
function answerAndClose(res: ServerResponse, status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(errorBody(code, message));
  res.writeHead(status, { ...COMMON_HEADERS, ...headers, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close' });
  res.end(body);
}

/** The REST side: common headers, Host check, health, the agents' hook relay, then everything behind the token. */
function expressApp(context: AppContext, deps: { ownNames: Set<string>; token: string; logger: Logger }): express.Express {
  const { pool } = context;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    for (const [name, value] of Object.entries(COMMON_HEADERS)) res.setHeader(name, value);
    next();
  });
  app.use(hostCheck(deps.ownNames));
  app.get('/api/health', async (_req, res) => {
    res.json(await context.health());
  });
  // The agents' hook relay: authenticated by the session's own secret, not the API token.
  app.post('/api/hooks', ...jsonBody, (req, res) => {
    const post = parseHookPost(req.body);
    const session = post && isValidSessionId(post.sessionId) ? pool.find(post.sessionId) : undefined;
    if (!post || !session || !session.acceptHook(req.headers[HOOK_SECRET_HEADER], post.event, post.payload)) {
      res.status(401).json({ error: { code: 'unauthorized', message: 'unknown session or wrong hook secret' } });
      return;
    }
    res.status(204).end();
  });
  app.use(requireToken(deps.token));
  app.use(sessionRoutes(context));
  app.use(notFoundHandler);
  app.use(errorHandler(deps.logger));
  return app;
}

/** Closes every socket with 1001 and waits for each to go (cut after CLOSE_GRACE_MS). */
function closeClients(wss: WebSocketServer): Promise<void[]> {
  return Promise.all(
    [...wss.clients].map(
      (ws) =>
        new Promise<void>((resolve) => {
          const force = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
          ws.once('close', () => {
            clearTimeout(force);
            resolve();
          });
          ws.close(1001, 'daemon stopping');
        }),
    ),
  );
}

function monitorStatus(monitor: HealthMonitor, intervalSeconds: number): Record<string, unknown> {
  const last = monitor.lastTick;
  return { intervalSeconds, lastTickAt: last ? new Date(last.at).toISOString() : null, lastTickMs: last ? Math.round(last.durationMs * 10) / 10 : null };
}

/** The whole kept scrollback: stored bytes, then what is only in memory. */
function historyOf(store: SessionStore, session: Session): { offset: number; data: Buffer } {
  const range = store.outputRange(session.id);
  const stored = range.end > range.start ? store.readOutput(session.id, range.start) : null;
  if (stored && stored.offset + stored.data.length >= session.log.start) {
    const tail = session.log.slice(stored.offset + stored.data.length);
    return { offset: stored.offset, data: tail && tail.length ? Buffer.concat([stored.data, tail]) : stored.data };
  }
  return { offset: session.log.start, data: session.log.slice(session.log.start) ?? Buffer.alloc(0) };
}
