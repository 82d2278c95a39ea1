import { WebSocket } from 'ws';
import { DisposableStore } from '../../common/disposable';
import { AppError } from '../../common/errors';
import { Logger } from '../../common/log';
import { ChatService, MAX_MESSAGE_CHARS } from '../../sessions/ChatService';
import { hasVisibleText } from '../../sessions/Conversation';
import { Session } from '../../sessions/Session';

/**
 * The chat socket of the existing iOS app (`/api/claude/ws`, `/api/codex/ws`):
 * `{content, session_id, device_id}` in; `state`, `permission` and
 * `message` frames out. Sessions are the same as on the REST API.
 */
export function serveChat(ws: WebSocket, agent: string, deps: { chat: ChatService; logger: Logger }): void {
  const subs = new DisposableStore();
  const watched = new Set<string>();
  /** The session this socket is queueing a turn on: its own `busy` goes out once, with the turn's id. */
  let queueing: string | null = null;
  const send = (frame: object) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  };
  const fail = (code: string, message: string, sessionId?: string) => send({ type: 'error', code, message, ...(sessionId ? { session_id: sessionId } : {}) });

  const watch = (session: Session) => {
    if (watched.has(session.id)) return;
    watched.add(session.id);
    subs.add(
      session.onState((state) => {
        if (state === 'busy' && queueing === session.id) return;
        send({ type: 'state', state, session_id: session.id });
      }),
    );
    subs.add(
      session.chat.onPrompt((p) => {
        if (p) send({ type: 'permission', session_id: session.id, turnId: p.turnId, prompt: p.prompt, options: p.options });
      }),
    );
    subs.add(
      session.chat.onTurnEnd((turn) => {
        if (turn.kind !== 'chat') return;
        send({ type: 'message', role: 'assistant', content: turn.response ?? '', session_id: session.id, turnId: turn.id, status: turn.status });
      }),
    );
  };

  ws.on('message', async (data: Buffer, isBinary: boolean) => {
    if (isBinary) return fail('invalid_request', 'chat frames are JSON text');
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(data.toString('utf8'));
    } catch {
      return fail('invalid_request', 'frame is not valid JSON');
    }
    if (!frame || typeof frame !== 'object' || Array.isArray(frame)) return fail('invalid_request', 'frame must be a JSON object');
    if (frame.type === 'auth') return; // already authenticated
    const { content, session_id: sessionId, device_id: deviceId } = frame;
    if (typeof content !== 'string' || !hasVisibleText(content) || content.length > MAX_MESSAGE_CHARS) {
      return fail('invalid_request', `content must be a string with visible text, of at most ${MAX_MESSAGE_CHARS} characters`);
    }
    try {
      const session = deps.chat.sessionFor({ sessionId, agent });
      if (session.record.agent !== agent) throw new AppError('conflict', `session ${session.id} belongs to ${session.record.agent}`);
      watch(session);
      await deps.chat.ensureRunning(session);
      queueing = session.id;
      let turn;
      try {
        turn = session.chat.send('chat', content, typeof deviceId === 'string' ? deviceId.slice(0, 256) : null);
      } finally {
        queueing = null;
      }
      send({ type: 'state', state: 'busy', session_id: session.id, turnId: turn.id });
    } catch (err) {
      const e = err as AppError;
      fail(e.code ?? 'internal', e.message, typeof sessionId === 'string' ? sessionId : undefined);
    }
  });
  ws.on('close', () => subs.dispose());
  ws.on('error', (err) => deps.logger.debug({ err: err.message }, 'chat socket error'));
  send({ type: 'ready' });
}
