import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Terminal } from '@xterm/headless';
import { DaemonProcess, startDaemonProcess } from '../../helpers/daemonProcess';
import { cleanupTmp, tmpdir } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { TestSocket } from '../../helpers/ws';
import { readProc } from '../../../server/pty/processes';
import { integrity } from '../../helpers/db';

const AGENTS = { py: { command: 'python3', args: ['-i', '-q'], env: { PYTHONUNBUFFERED: '1' } } };
/** Bytes received this long before a SIGKILL must have been flushed (batches flush every second). */
const FLUSH_WINDOW_MS = 1_500;

const daemons: DaemonProcess[] = [];
const sockets: TestSocket[] = [];
afterAll(async () => {
  for (const s of sockets) s.ws.terminate();
  for (const d of daemons) await d.kill('SIGKILL');
  cleanupTmp();
});

async function start(dataDir: string, root: string, env?: Record<string, string>): Promise<DaemonProcess> {
  const d = await startDaemonProcess({ dataDir, root, agents: AGENTS, env });
  daemons.push(d);
  return d;
}

function attach(d: DaemonProcess, path: string): TestSocket {
  const s = d.socket(path);
  sockets.push(s);
  return s;
}

/** Records when each byte arrived, so we can ask what was received before a moment. */
/** How many leading bytes `a` and `b` share. */
function commonPrefix(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function track(sock: TestSocket): { at: number; total: number }[] {
  const marks: { at: number; total: number }[] = [];
  sock.ws.on('message', (_d, isBinary) => {
    if (isBinary) marks.push({ at: Date.now(), total: sock.output.length });
  });
  return marks;
}

function write(term: Terminal, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => term.write(data, resolve));
}
function screenLines(term: Terminal): string[] {
  const b = term.buffer.active;
  return Array.from({ length: b.length }, (_, i) => b.getLine(i)!.translateToString(true));
}

describe('sessions survive a daemon crash (kill -9) and a restart', () => {
  it('keeps history, shows the last screen exactly, resumes by offset, and revives bash and python', async () => {
    const dataDir = tmpdir('crash-data');
    const root = tmpdir('crash-root');
    const a = await start(dataDir, root);
    const bash = (await a.api('POST', '/api/sessions', { agent: 'shell', projectPath: root, cols: 100, rows: 30 })).json.session;
    const py = (await a.api('POST', '/api/sessions', { agent: 'py', projectPath: root })).json.session;

    const pyWs = attach(a, `/api/sessions/${py.id}/ws`);
    await pyWs.nextJson((f) => f.type === 'snapshot');
    pyWs.sendBytes('secret = 41\r');
    await pyWs.waitOutput('>>> ');

    const ws = attach(a, `/api/sessions/${bash.id}/ws?cols=100&rows=30`);
    const snap0 = await ws.nextJson((f) => f.type === 'snapshot');
    const marks = track(ws);
    ws.sendBytes('for i in $(seq 1 100000); do printf "\\e[3%dmline-%06d\\e[0m\\n" $((i % 7)) $i; sleep 0.002; done\r');
    await ws.waitOutput('line-000300', 20_000);
    await new Promise((r) => setTimeout(r, 2_000));
    const oldPids = [bash.pid, py.pid];
    const killedAt = Date.now();
    expect(await a.kill('SIGKILL')).toBe(null);

    // The dead daemon's agents are gone: their terminal closed under them.
    await waitFor(() => oldPids.every((pid) => { const p = readProc(pid); return !p || p.state === 'Z'; }), 10_000, 'old agents gone');
    const safe = [...marks].reverse().find((m) => m.at <= killedAt - FLUSH_WINDOW_MS)!;
    expect(safe.total).toBeGreaterThan(1000);
    const safeOffset = snap0.offset + safe.total;

    const b = await start(dataDir, root);
    expect(integrity(dataDir)).toBe('ok');
    const list = (await b.api('GET', '/api/sessions')).json.sessions;
    for (const id of [bash.id, py.id]) {
      const s = list.find((x: any) => x.id === id);
      expect(s).toMatchObject({ state: 'exited', endReason: 'daemon_stopped', pid: null });
    }
    const history = await b.api('GET', `/api/sessions/${bash.id}/history?format=ansi`);
    const historyStart = Number(history.headers['x-agentd-offset-start']);
    expect(historyStart).toBe(0);
    const stored = Buffer.from(history.text, 'utf8');
    // Every byte the client had received 1.5 s before the kill is in history, identical.
    expect(stored.length).toBeGreaterThanOrEqual(safeOffset);
    expect(stored.subarray(snap0.offset, safeOffset).equals(ws.output.subarray(0, safe.total))).toBe(true);

    // Resume by offset across the restart: exactly the missing bytes.
    const resumed = attach(b, `/api/sessions/${bash.id}/ws?since=${safeOffset}`);
    const attachedR = await resumed.nextJson((f) => f.type === 'attached');
    expect(attachedR.offset).toBe(safeOffset);
    await waitFor(() => resumed.output.length >= stored.length - safeOffset);
    expect(resumed.output.subarray(0, stored.length - safeOffset).equals(stored.subarray(safeOffset))).toBe(true);
    expect(resumed.json().some((f) => f.type === 'snapshot')).toBe(false);

    // A fresh client sees the last stored screen exactly (plus whatever the revived shell printed since).
    const viewer = attach(b, `/api/sessions/${bash.id}/ws`);
    const snap = await viewer.nextJson((f) => f.type === 'snapshot');
    const all = Buffer.from((await b.api('GET', `/api/sessions/${bash.id}/history?format=ansi`)).text, 'utf8');
    const reference = new Terminal({ cols: 100, rows: 30, scrollback: 1000, allowProposedApi: true });
    await write(reference, all.subarray(0, snap.offset));
    const replay = new Terminal({ cols: snap.cols, rows: snap.rows, scrollback: 1000, allowProposedApi: true });
    await write(replay, snap.data);
    expect(screenLines(replay).slice(-30)).toEqual(screenLines(reference).slice(-30));
    reference.dispose();
    replay.dispose();

    // Attaching revived the bash session (it was live when the daemon died).
    await waitFor(async () => (await b.api('GET', `/api/sessions/${bash.id}`)).json.session.state === 'running', 10_000, 'bash revived');
    viewer.sendBytes('echo revived-$((40+2))\r');
    await viewer.waitOutput('revived-42');
    const events = (await b.api('GET', `/api/sessions/${bash.id}`)).json.session;
    expect(events.pid).not.toBe(bash.pid);

    // python revives on attach too and answers.
    const pyAgain = attach(b, `/api/sessions/${py.id}/ws`);
    await pyAgain.nextJson((f) => f.type === 'snapshot');
    await waitFor(async () => (await b.api('GET', `/api/sessions/${py.id}`)).json.session.state === 'running', 10_000, 'python revived');
    pyAgain.sendBytes('print(6*7)\r');
    await pyAgain.waitOutput(/\n42\r?\n/);
    expect(await b.kill('SIGTERM')).toBe(0);
    expect(integrity(dataDir)).toBe('ok');
  }, 90_000);

  it('does not resume a client exactly from an offset the crash left ambiguous (lost bytes, then the revived agent\'s)', async () => {
    const dataDir = tmpdir('gap-data');
    const root = tmpdir('gap-root');
    let d = await start(dataDir, root);
    const s = (await d.api('POST', '/api/sessions', { agent: 'shell' })).json.session;
    // Output the client receives and the daemon has not stored yet (it stores every second), then kill -9.
    let seen = 0;
    let storedEnd = 0;
    for (let attempt = 1; ; attempt++) {
      const c = attach(d, `/api/sessions/${s.id}/ws`);
      const at = (await c.nextJson((f) => f.type === 'attached')).offset;
      await c.nextJson((f) => f.type === 'snapshot');
      await new Promise((r) => setTimeout(r, 1_500)); // the prompt is stored by now: the stored end is past it
      c.sendBytes(`printf 'x%.0s' $(seq 1 3000); echo LOST-${attempt}\r`);
      await c.waitOutput(`LOST-${attempt}\r\n`);
      seen = at + c.output.length;
      await d.kill('SIGKILL');
      d = await start(dataDir, root);
      storedEnd = Number((await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`)).headers['x-agentd-offset-end']);
      if (storedEnd < seen) break;
      if (attempt === 5) throw new Error('the daemon stored everything before each kill: nothing was lost to test with');
    }
    // A fresh client revives the shell, whose output takes the lost bytes' offsets and goes past the old client's.
    const fresh = attach(d, `/api/sessions/${s.id}/ws`);
    await fresh.nextJson((f) => f.type === 'snapshot');
    await waitFor(async () => (await d.api('GET', `/api/sessions/${s.id}`)).json.session.state === 'running', 10_000, 'the shell revived');
    fresh.sendBytes(`printf 'y%.0s' $(seq 1 ${seen - storedEnd + 2000}); echo NEW-END\r`);
    await fresh.waitOutput('NEW-END\r\n');
    const end = Number((await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`)).headers['x-agentd-offset-end']);
    expect(end).toBeGreaterThan(seen);
    expect(storedEnd).toBeGreaterThan(0);
    // The old client comes back with its position: its bytes past the stored end were lost, so it starts afresh.
    const back = attach(d, `/api/sessions/${s.id}/ws?since=${seen}`);
    const attached = await back.nextJson((f) => f.type === 'attached');
    expect(attached.offset).not.toBe(seen);
    await back.nextJson((f) => f.type === 'snapshot');
    // A position within what was stored still resumes exactly.
    const early = attach(d, `/api/sessions/${s.id}/ws?since=${storedEnd - 1}`);
    expect((await early.nextJson((f) => f.type === 'attached')).offset).toBe(storedEnd - 1);
    await d.kill('SIGTERM');
  }, 90_000);

  it('ends the turns a crash cut off (running and queued) as interrupted, as a SIGTERM does', async () => {
    const dataDir = tmpdir('crash-turns-data');
    const root = tmpdir('crash-turns-root');
    // A prompt pattern, so that a quiet python is not taken for a finished turn.
    const agents = { ...AGENTS, pyp: { ...AGENTS.py, promptPattern: '>>> $' } };
    const env = { CHAT_WAIT_SECONDS: '1' };
    const a = await startDaemonProcess({ dataDir, root, agents, env });
    daemons.push(a);
    const first = await a.api('POST', '/api/chat', { agent: 'pyp', projectPath: root, message: 'import time; time.sleep(120)' });
    expect(first.status).toBe(202);
    const sessionId = first.json.sessionId;
    const second = await a.api('POST', '/api/chat', { sessionId, message: 'print(6*7)' });
    expect(second.json).toMatchObject({ status: 'running' });
    await new Promise((r) => setTimeout(r, FLUSH_WINDOW_MS)); // the turns are on disk
    expect(await a.kill('SIGKILL')).toBe(null);

    const b = await startDaemonProcess({ dataDir, root, agents, env });
    daemons.push(b);
    const messages = (await b.api('GET', `/api/sessions/${sessionId}/messages`)).json.messages;
    const answers = messages.filter((m: any) => m.role === 'assistant');
    expect(answers.map((m: any) => [m.turnId, m.status])).toEqual([
      [first.json.turnId, 'interrupted'],
      [second.json.turnId, 'interrupted'],
    ]);
    expect(await b.kill('SIGTERM')).toBe(0);
  }, 60_000);

  it('loses nothing beyond the last batch when killed at 20 random points', async () => {
    const dataDir = tmpdir('loop-data');
    const root = tmpdir('loop-root');
    const deadline = Date.now() + 45_000;
    type Round = { id: string; snapOffset: number; output: Buffer; safe: { at: number; total: number } | undefined; killedAt: number };
    let previous: Round | null = null;
    let checked = 0;
    // Each daemon first checks the session its predecessor streamed when it was killed.
    const verify = async (d: DaemonProcess, r: Round) => {
      expect(integrity(dataDir)).toBe('ok');
      const history = Buffer.from((await d.api('GET', `/api/sessions/${r.id}/history?format=ansi`)).text, 'utf8');
      if (r.safe) {
        const kept = history.subarray(r.snapOffset, r.snapOffset + r.safe.total);
        const same = commonPrefix(kept, r.output);
        // On a failure, say how much of what the client had seen >= FLUSH_WINDOW_MS before the kill was stored.
        expect({ round: checked, storedOfSafe: same, safe: r.safe.total, seenMsBeforeKill: r.killedAt - r.safe.at }).toEqual({
          round: checked,
          storedOfSafe: r.safe.total,
          safe: r.safe.total,
          seenMsBeforeKill: r.killedAt - r.safe.at,
        });
      }
      expect((await d.api('GET', `/api/sessions/${r.id}`)).json.session.endReason).toBe('daemon_stopped');
      checked++;
    };
    for (let i = 0; i < 20 && Date.now() < deadline; i++) {
      const d = await start(dataDir, root);
      if (previous) await verify(d, previous);
      const s = (await d.api('POST', '/api/sessions', { agent: 'shell', projectPath: root })).json.session;
      const ws = attach(d, `/api/sessions/${s.id}/ws`);
      const snap = await ws.nextJson((f) => f.type === 'snapshot');
      const marks = track(ws);
      ws.sendBytes(`for i in $(seq 1 100000); do echo r${i}-$i; sleep 0.001; done\r`);
      // A random point: sometimes before the first flush, sometimes after several.
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 2_400));
      const killedAt = Date.now();
      await d.kill('SIGKILL');
      ws.ws.terminate();
      previous = { id: s.id, snapOffset: snap.offset, output: ws.output, safe: [...marks].reverse().find((m) => m.at <= killedAt - FLUSH_WINDOW_MS), killedAt };
    }
    const last = await start(dataDir, root);
    await verify(last, previous!);
    await last.kill('SIGTERM');
    expect(checked).toBeGreaterThanOrEqual(8);
  }, 90_000);

  it('stops on SIGTERM when whoever read its log has gone (stdout a closed pipe)', async () => {
    const d = await start(tmpdir('epipe-data'), tmpdir('epipe-root'));
    // As `agentd | head -5` once head has exited: the next log line meets a broken pipe.
    d.child.stdout!.destroy();
    d.child.stderr!.destroy();
    expect((await d.api('GET', '/api/sessions')).status).toBe(200);
    expect(await d.kill('SIGTERM')).toBe(0);
  }, 30_000);

  it('stops on SIGTERM at once and cleanly while a client reconnects the moment it is told 1001 and another never answers', async () => {
    const dataDir = tmpdir('reconnect-data');
    const d = await start(dataDir, tmpdir('reconnect-root'));
    const s = (await d.api('POST', '/api/sessions', { agent: 'shell' })).json.session;
    // A phone app that reconnects at once (it used to revive its session mid-shutdown, and the stop then hung 15 s)...
    let reconnects = 0;
    let stop = false;
    const eager = () => {
      const sock = attach(d, `/api/sessions/${s.id}/ws`);
      sock.ws.on('close', () => {
        if (stop) return;
        reconnects++;
        setTimeout(eager, 10);
      });
    };
    eager();
    // ...and a client that stops reading, so the daemon waits for its close answer.
    const stuck = attach(d, `/api/sessions/${s.id}/ws`);
    await stuck.nextJson((f) => f.type === 'snapshot');
    (stuck.ws as any)._socket.pause();
    const t0 = Date.now();
    let code: number | null;
    try {
      code = await d.kill('SIGTERM');
    } finally {
      stop = true;
    }
    expect({ code, seconds: Math.round((Date.now() - t0) / 1000) }).toEqual({ code: 0, seconds: expect.any(Number) });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(reconnects).toBeGreaterThanOrEqual(1);
    expect(d.output()).not.toContain('session revived');
    expect(existsSync(join(dataDir, 'agentd.lock'))).toBe(false);
    // The next start finds it ended by the stop, not left running as after a crash.
    const next = await start(dataDir, tmpdir('reconnect-root-2'));
    expect(next.output()).toMatch(/"stopped":0/);
    expect((await next.api('GET', `/api/sessions/${s.id}`)).json.session).toMatchObject({ state: 'exited', endReason: 'daemon_stopped' });
    await next.kill('SIGTERM');
  }, 40_000);

  it('refuses a second daemon on the same DATA_DIR with a clear message', async () => {
    const dataDir = tmpdir('second-data');
    const root = tmpdir('second-root');
    const first = await start(dataDir, root);
    await expect(startDaemonProcess({ dataDir, root })).rejects.toThrow(/another agentd.*pid \d+|already/i);
    expect((await first.api('GET', '/api/sessions')).status).toBe(200);
    await first.kill('SIGTERM');
  });

  it('moves a corrupt database aside, says so loudly, and starts fresh', async () => {
    const dataDir = tmpdir('corrupt-data');
    const root = tmpdir('corrupt-root');
    writeFileSync(join(dataDir, 'agentd.db'), Buffer.alloc(8192, 0x5a));
    const d = await start(dataDir, root);
    expect((await d.api('GET', '/api/sessions')).json.count).toBe(0);
    expect(d.output()).toMatch(/corrupt/i);
    await d.kill('SIGTERM');
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(dataDir).some((f) => f.startsWith('agentd.db.corrupt'))).toBe(true);
  });
});
