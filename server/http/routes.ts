import { Router } from 'express';
import { errors } from '../common/errors';
import { isValidSessionId, SESSION_ID_RULE } from '../common/ids';
import { toPlainLines } from '../sessions/text';
import { AppContext } from './context';
import { jsonBody, optionalString } from './middleware';

/** REST routes: thin handlers over the pool and sessions (contract: REST). */
export function sessionRoutes(ctx: AppContext): Router {
  const r = Router();
  const { pool } = ctx;

  r.post('/api/sessions', ...jsonBody, (req, res) => {
    const session = pool.create(req.body);
    ctx.logger.info({ sessionId: session.id, agent: session.record.agent, cwd: session.record.projectPath }, 'session created');
    res.status(201).json({ session: session.toJSON() });
  });

  r.get('/api/sessions', (_req, res) => {
    const sessions = pool.list().map((s) => s.toJSON());
    res.json({ sessions, count: sessions.length });
  });

  r.get('/api/sessions/active', (_req, res) => {
    const live = pool.live();
    const sessions = live.map((s) => s.toActiveJSON());
    const usedMB = ctx.memoryUsedMB() ?? live.reduce((sum, s) => sum + (s.figures.memoryMB ?? 0), 0);
    res.json({
      sessions,
      count: sessions.length,
      slots: { used: live.length, max: ctx.config.maxConcurrentSessions },
      memory: { usedMB: Math.round(usedMB * 10) / 10, maxMB: ctx.config.maxTotalMemoryGB * 1024 },
    });
  });

  r.post('/api/sessions/keep-alive', ...jsonBody, async (req, res) => {
    const id: unknown = req.body.sessionId;
    if (id === undefined || id === null) throw errors.invalid('sessionId is required');
    if (!isValidSessionId(id)) throw errors.invalid(SESSION_ID_RULE);
    const session = pool.get(id);
    const action = optionalString(req.body, 'action', 64);
    if (action !== undefined && action !== 'recap') throw errors.invalid('action must be "recap" when given');
    const result = await ctx.keepAlive(session, action === 'recap');
    res.json({ session: session.toJSON(), expiresAt: session.toJSON().expiresAt, ...result });
  });

  // Compatibility routes for existing clients (same behaviour as the main ones).
  r.get('/api/sessions/interactive/:id/status', (req, res) => {
    res.json({ session: pool.get(req.params.id).toJSON() });
  });
  // Closing, by the main route and the compatibility ones. The session logs 'session ended' when it ended a live one.
  for (const path of ['/api/sessions/:id', '/api/sessions/interactive/:id', '/api/claude/session/:id/close', '/api/codex/session/:id/close']) {
    r.delete(path, async (req, res) => {
      res.json({ session: (await pool.close(req.params.id)).toJSON() });
    });
  }

  r.get('/api/sessions/:id', (req, res) => {
    res.json({ session: ctx.sessionView(pool.get(req.params.id)) });
  });

  r.post('/api/sessions/:id/revive', async (req, res) => {
    const session = pool.get(req.params.id);
    await ctx.revive(session, 'requested');
    res.json({ session: session.toJSON() });
  });

  r.get('/api/sessions/:id/history', (req, res) => {
    const session = pool.get(req.params.id);
    const format = req.query.format ?? 'text';
    if (format !== 'text' && format !== 'ansi') throw errors.invalid('format must be "text" or "ansi"');
    const history = ctx.history(session);
    res.setHeader('X-Agentd-Offset-Start', String(history.offset));
    res.setHeader('X-Agentd-Offset-End', String(history.offset + history.data.length));
    res.type('text/plain; charset=utf-8');
    res.send(format === 'ansi' ? history.data : toPlainLines(history.data.toString('utf8')).join('\n'));
  });

  r.post('/api/sessions/:id/input', ...jsonBody, (req, res) => {
    const session = pool.get(req.params.id);
    const data = req.body.data;
    if (typeof data !== 'string') throw errors.invalid('data must be a string');
    if (!session.isLive()) throw errors.conflict(`session ${session.id} is ${session.state}`);
    session.write(data);
    res.status(202).json({ accepted: Buffer.byteLength(data) });
  });

  r.get('/api/sessions/:id/messages', (req, res) => {
    const session = pool.get(req.params.id);
    res.json({ messages: ctx.messages(session) });
  });

  r.post('/api/sessions/:id/answer', ...jsonBody, (req, res) => {
    const session = pool.get(req.params.id);
    ctx.answer(session, req.body.option);
    res.json({ session: ctx.sessionView(session) });
  });

  r.post('/api/chat', ...jsonBody, async (req, res) => {
    const result = await ctx.chat(req.body);
    res.status(result.status).json(result.body);
  });

  return r;
}
