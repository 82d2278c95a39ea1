import { createServer, IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
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
import { errorHandler, notFoundHandler } from './errorHandler';
import { hostCheck, jsonBody, requireToken } from './middleware';
import { HOOK_SECRET_HEADER, parseHookPost } from '../agents/relay';
import { sessionRoutes } from './routes';
import { serveChat } from './ws/chat';
import { parseOffset, serveTerminal } from './ws/terminal';
import { awaitAuthFrame, checkUpgrade, MAX_PAYLOAD_BYTES, refuse, startHeartbeat } from './ws/upgrade';


export interface AppDeps {
  logger: Logger;
  store: SessionStore;
  token: string;
  clock?: Clock;
  backend?: PtyBackend;
}

export interface App {
  server: Server;
  /** Loads stored sessions (after a restart) and starts the retention sweep. */
  restore(): Promise<void>;
  context: AppContext;
  pool: SessionPool;
  /** Ends every session's processes, closes sockets and the server, frees every timer. */
  dispose(): Promise<void>;
}

const TERMINAL_PATH = /^\/api\/sessions\/([^/]+)\/ws$/;
const CHAT_PATHS: Record<string, string> = { '/api/claude/ws': 'claude', '/api/codex/ws': 'codex' };
/** How long a client may take to answer our close frame at shutdown before its socket is cut. */
const CLOSE_GRACE_MS = 1_000;
/** Ended sessions past RETENTION_DAYS are removed at start-up and then daily. */
const RETENTION_SWEEP_MS = 24 * 3_600_000;
/** Close code for a session that does not exist, when only the auth frame could tell us who asked. */
const CLOSE_NOT_FOUND = 4404;

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
      agentStatus ??= await probeAgents(agents, ['claude', 'codex', 'shell']);
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

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  app.use(hostCheck(ownNames));
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
  app.use(errorHandler(logger));

  const server = createServer(app);
  const allowedOrigins = () => {
    if (config.allowedOrigins.length) return new Set(config.allowedOrigins);
    const port = (server.address() as AddressInfo | null)?.port;
    return new Set(['localhost', '127.0.0.1', '[::1]', config.host].map((h) => `http://${h}:${port}`));
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    try {
      routeUpgrade(req, socket, head);
    } catch (err) {
      // Nothing a client sends may take the daemon down.
      logger.error({ err: (err as Error).message }, 'upgrade failed');
      refuse(socket, 500, 'internal', 'internal error');
    }
  };
  const routeUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const terminal = TERMINAL_PATH.exec(url.pathname);
    const chatAgent = CHAT_PATHS[url.pathname];
    if (!terminal && !chatAgent) return refuse(socket, 404, 'not_found', `no WebSocket route ${url.pathname}`);
    const checked = checkUpgrade(req, socket, { ownNames, allowedOrigins, token: deps.token });
    if (!checked.ok) return;

    if (chatAgent) {
      wss.handleUpgrade(req, socket, head, async (ws) => {
        wss.emit('connection', ws, req);
        if (checked.needsAuthFrame && !(await awaitAuthFrame(ws, deps.token))) return;
        serveChat(ws, chatAgent, { chat, logger });
      });
      return;
    }

    let id: string;
    try {
      id = decodeURIComponent(terminal![1]);
    } catch {
      return refuse(socket, 400, 'invalid_request', 'malformed session id');
    }
    if (!isValidSessionId(id)) return refuse(socket, 400, 'invalid_request', 'malformed session id');
    const since = parseOffset(url.searchParams.get('since'));
    const cols = parseOffset(url.searchParams.get('cols'));
    const rows = parseOffset(url.searchParams.get('rows'));
    if (Number.isNaN(since)) return refuse(socket, 400, 'invalid_request', 'since must be a non-negative integer');
    const size = cols !== undefined && rows !== undefined && cols >= 1 && cols <= 1000 && rows >= 1 && rows <= 500 ? { cols, rows } : {};
    if (!checked.needsAuthFrame && !pool.find(id)) return refuse(socket, 404, 'not_found', `session ${id} not found`);

    wss.handleUpgrade(req, socket, head, async (ws) => {
      wss.emit('connection', ws, req);
      if (checked.needsAuthFrame && !(await awaitAuthFrame(ws, deps.token))) return;
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
  server.on('upgrade', onUpgrade);

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
    async dispose() {
      if (disposed) return;
      disposed = true;
      if (retention) clearInterval(retention);
      monitor.dispose();
      stopHeartbeat();
      await pool.shutdown('daemon_stopped');
      // Clients are told (1001) and gone before the sessions and the store are, so no late close event finds them closed.
      await Promise.all(
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
      wss.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      pool.dispose();
      screen.dispose();
      await reader.dispose();
    },
  };
}

function monitorStatus(monitor: HealthMonitor, intervalSeconds: number): Record<string, unknown> {
  const last = monitor.lastTick;
  return { intervalSeconds, lastTickAt: last ? new Date(last.at).toISOString() : null, lastTickMs: last ? Math.round(last.durationMs * 10) / 10 : null };
}

/** Attaching to a session that was live when the daemon stopped brings it back. */
async function reviveOnAttach(pool: SessionPool, session: Session): Promise<void> {
  if (session.isLive() || session.record.endReason !== 'daemon_stopped') return;
  await pool.revive(session, 'attach');
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
