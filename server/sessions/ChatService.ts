import { errors } from '../common/errors';
import { iso } from '../common/clock';
import { isValidSessionId, SESSION_ID_RULE } from '../common/ids';
import { Logger } from '../common/log';
import { Config } from '../config/schema';
import { TurnRecord } from '../store/SessionStore';
import { Session } from './Session';
import { hasVisibleText } from './Conversation';
import { SessionPool } from './SessionPool';

export interface ChatRequest {
  message?: unknown;
  sessionId?: unknown;
  agent?: unknown;
  projectPath?: unknown;
  deviceToken?: unknown;
  deviceId?: unknown;
}

export interface ChatResult {
  status: 200 | 202;
  body: Record<string, unknown>;
}

export const MAX_MESSAGE_CHARS = 100_000;

/**
 * Chat on top of sessions: finds or creates the session, revives it if it
 * died, queues the turn and waits (bounded) for its end. Used by POST
 * /api/chat, the chat sockets and keep-alive recaps.
 */
export class ChatService {
  constructor(private readonly pool: SessionPool, private readonly config: Config, private readonly logger: Logger) {}

  async chat(req: ChatRequest): Promise<ChatResult> {
    if (typeof req.message !== 'string' || !hasVisibleText(req.message) || req.message.length > MAX_MESSAGE_CHARS) {
      throw errors.invalid(`message must be a string with visible text, of at most ${MAX_MESSAGE_CHARS} characters`);
    }
    const deviceId = typeof req.deviceId === 'string' ? req.deviceId.slice(0, 256) : typeof req.deviceToken === 'string' ? req.deviceToken.slice(0, 256) : null;
    const session = this.sessionFor(req);
    await this.ensureRunning(session);
    const turn = session.chat.send('chat', req.message, deviceId);
    const ended = await this.waitForTurn(session, turn, this.config.chatWaitSeconds * 1000);
    if (ended && ended.status !== 'running') {
      return { status: 200, body: { sessionId: session.id, turnId: turn.id, status: turn.status, response: turn.response } };
    }
    const prompt = session.chat.prompt;
    if (prompt && prompt.turnId === turn.id) {
      return { status: 202, body: { sessionId: session.id, turnId: turn.id, status: 'needs_input', prompt } };
    }
    return { status: 202, body: { sessionId: session.id, turnId: turn.id, status: 'running' } };
  }

  /** The session named by the request, or a new one when it is absent or unknown. */
  sessionFor(req: { sessionId?: unknown; agent?: unknown; projectPath?: unknown; deviceToken?: unknown }): Session {
    if (req.sessionId !== undefined && req.sessionId !== null) {
      if (!isValidSessionId(req.sessionId)) throw errors.invalid(SESSION_ID_RULE);
      const existing = this.pool.find(req.sessionId);
      if (existing) return existing;
    }
    if (req.agent === undefined) throw errors.invalid('agent is required to start a new session');
    return this.pool.create({ agent: req.agent, projectPath: req.projectPath, sessionId: req.sessionId, deviceToken: req.deviceToken });
  }

  /** Revives a session that died but was not closed by the user; 409 for one that was. */
  async ensureRunning(session: Session): Promise<void> {
    if (session.isLive()) return;
    if (session.state === 'closed') throw errors.conflict(`session ${session.id} was closed; revive it explicitly with POST /api/sessions/${session.id}/revive`);
    await this.pool.revive(session, 'chat');
  }

  /** Resolves with the turn when it ends, or null when `ms` passes or a permission question opens. */
  waitForTurn(session: Session, turn: TurnRecord, ms: number): Promise<TurnRecord | null> {
    if (turn.status !== 'running') return Promise.resolve(turn);
    return new Promise((resolve) => {
      const done = (value: TurnRecord | null) => {
        clearTimeout(timer);
        subEnd.dispose();
        subPrompt.dispose();
        resolve(value);
      };
      const timer = setTimeout(() => done(null), ms);
      const subEnd = session.chat.onTurnEnd((t) => {
        if (t.id === turn.id) done(t);
      });
      const subPrompt = session.chat.onPrompt((p) => {
        if (p && p.turnId === turn.id) done(null);
      });
    });
  }

  /** Keep-alive; with a recap, asks the agent and waits for its answer. */
  async keepAlive(session: Session, recap: boolean): Promise<{ recap?: string | null; turnId?: string }> {
    if (!session.isLive()) throw errors.conflict(`session ${session.id} is ${session.state}; keep-alive needs a live session`);
    session.keepAlive();
    session.recordKeepAlive();
    if (!recap) return {};
    const turn = session.chat.send('recap', session.profile.recapPrompt, null);
    const ended = await this.waitForTurn(session, turn, this.config.chatWaitSeconds * 1000);
    this.logger.info({ sessionId: session.id, turnId: turn.id, status: turn.status }, 'recap');
    return { recap: ended ? ended.response : null, turnId: turn.id };
  }

  /** The conversation as messages: each turn's prompt and response. */
  messages(session: Session, turns: TurnRecord[]): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const t of turns) {
      out.push({ turnId: t.id, role: 'user', kind: t.kind, content: t.prompt, at: iso(t.startedAt) });
      if (t.status !== 'running') out.push({ turnId: t.id, role: 'assistant', kind: t.kind, status: t.status, content: t.response ?? '', at: iso(t.endedAt) });
    }
    return out;
  }
}
