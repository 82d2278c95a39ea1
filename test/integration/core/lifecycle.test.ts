import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { startDaemon, TestDaemon } from '../../helpers/app';
import { cleanupTmp } from '../../helpers/tmp';
import { waitFor } from '../../helpers/wait';
import { listPids, ProcessTable, readProc } from '../../../server/pty/processes';
import { SESSION_TAG_ENV } from '../../../server/pty/kill';

const WRITER_BYTES = 512 * 1024;
let d: TestDaemon;
beforeAll(async () => {
  d = await startDaemon({
    maxConcurrentSessions: 8,
    agents: {
      // Writes a known pattern and exits at once: the case where node-pty loses the tail.
      writer: {
        command: 'python3',
        args: ['-c', `import sys,os; os.write(1, b'0123456789abcdef' * ${WRITER_BYTES / 16} + b'END')`],
      },
      stubborn: { command: 'bash', args: ['--norc', '--noprofile', '-i'] },
    },
  });
});
afterAll(async () => {
  await d.dispose();
  cleanupTmp();
});

function ptyFds(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target === '/dev/ptmx' || target.startsWith('/dev/pts/')) n++;
    } catch {
      // fd closed while listing
    }
  }
  return n;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

function taggedPids(tag: string): number[] {
  return new ProcessTable().tagged(SESSION_TAG_ENV, tag).filter((pid) => readProc(pid)?.state !== 'Z');
}

/** Live processes whose command line is exactly `command` (zombies are gone for our purpose). */
function pidsRunning(command: string): number[] {
  return listPids().filter((pid) => cmdline(pid).trim() === command && readProc(pid)?.state !== 'Z');
}

function gone(pid: number): boolean {
  const info = readProc(pid);
  return info === null || info.state === 'Z';
}

/** Ends what a failed test left, by pid, only if it is still the same command. */
function endLeftovers(byCommand: Map<string, number[]>): void {
  for (const [command, pids] of byCommand) {
    for (const pid of pids) {
      if (cmdline(pid).trim() !== command) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone: nothing to end.
      }
    }
  }
}

describe('session lifecycle', () => {
  it('delivers every byte a program writes right before it exits, to clients and to history', async () => {
    const runs = 24;
    const concurrency = 4;
    const expected = '0123456789abcdef'.repeat(WRITER_BYTES / 16) + 'END';
    let failures = 0;
    const one = async () => {
      const s = await d.create({ agent: 'writer' });
      const ws = d.socket(`/api/sessions/${s.id}/ws?since=0`);
      const exit = await ws.nextJson((f) => f.type === 'exit', 20_000);
      expect(exit.exitCode).toBe(0);
      const history = await d.api('GET', `/api/sessions/${s.id}/history?format=ansi`);
      if (history.text !== expected || ws.output.toString('latin1') !== expected) failures++;
      ws.close();
    };
    for (let i = 0; i < runs; i += concurrency) {
      await Promise.all(Array.from({ length: concurrency }, one));
    }
    expect(failures).toBe(0);
  });

  it('holds no screen model for an ended session: it is stored at the end, and reopened only to show it', async () => {
    const s = await d.create({ agent: 'shell', cols: 100, rows: 30 });
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    expect(d.app.screen.has(s.id)).toBe(true);
    ws.sendBytes('for i in $(seq 1 200); do echo "row $i"; done; exit 0\r');
    const exit = await ws.nextJson((f) => f.type === 'exit');
    expect(exit.exitCode).toBe(0);
    await waitFor(() => !d.app.screen.has(s.id), 5_000, 'the model let go');
    // A client looking later sees the last screen exactly, and the model is let go again.
    const late = d.socket(`/api/sessions/${s.id}/ws`);
    const snap = await late.nextJson((f) => f.type === 'snapshot');
    expect(snap.data).toContain('row 200');
    await waitFor(() => !d.app.screen.has(s.id), 2_000, 'the model let go again');
    // Several at once, and some a moment apart: none is answered from a model closed under it.
    for (let round = 0; round < 6; round++) {
      const viewers = [];
      for (let i = 0; i < 4; i++) {
        viewers.push(d.socket(`/api/sessions/${s.id}/ws`));
        if (round % 2) await new Promise((r) => setTimeout(r, i));
      }
      const snaps = await Promise.all(viewers.map((v) => v.nextJson((f) => f.type === 'snapshot')));
      expect(snaps.map((x) => x.data.includes('row 200'))).toEqual([true, true, true, true]);
      for (const v of viewers) v.close();
    }
    await waitFor(() => !d.app.screen.has(s.id), 2_000, 'the model let go after them all');
  });

  it('reports an agent that exits by itself as exited, with its code, to every client', async () => {
    const s = await d.create({ agent: 'shell' });
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    ws.sendBytes('exit 7\r');
    const exit = await ws.nextJson((f) => f.type === 'exit');
    expect(exit.exitCode).toBe(7);
    const session = (await d.api('GET', `/api/sessions/${s.id}`)).json.session;
    expect(session).toMatchObject({ state: 'exited', exitCode: 7, pid: null });
    expect(session.endReason).toMatch(/exited with code 7/);
  });

  it('ends every process on close, including setsid, nohup and double-forked ones, and a shell that ignores HUP and TERM', async () => {
    const fdsBefore = ptyFds();
    const s = await d.create({ agent: 'stubborn' });
    const ws = d.socket(`/api/sessions/${s.id}/ws`);
    await ws.nextJson((f) => f.type === 'snapshot');
    ws.sendBytes("trap '' HUP TERM; setsid sleep 1000 & nohup sleep 1001 >/dev/null 2>&1 & (sleep 1002 &); bash -c 'trap \"\" HUP TERM; sleep 1003' & echo spawned-all\r");
    await ws.waitOutput('spawned-all\r\n');
    const active = (await d.api('GET', '/api/sessions/active')).json.sessions.find((x: any) => x.id === s.id);
    expect(active).toBeDefined();
    const tag = d.app.pool.get(s.id).record.tag!;
    const sleeps = (pids: number[]) => pids.filter((pid) => /^sleep 100[0-3]/.test(cmdline(pid)));
    const pids = await waitFor(() => {
      const found = taggedPids(tag);
      return sleeps(found).length === 4 ? found : null;
    }, 5000, 'all four sleeps running');
    const setsid = pids.find((pid) => readProc(pid)!.ppid === 1 || readProc(pid)!.pgid === pid);
    expect(setsid).toBeDefined();

    const started = Date.now();
    const res = await d.api('DELETE', `/api/sessions/${s.id}`);
    expect(res.status).toBe(200);
    expect(res.json.session.state).toBe('closed');
    // The shell ignored HUP and TERM: SIGKILL ended it, so there is a signal and no exit status.
    expect(res.json.session).toMatchObject({ exitCode: null, signal: 9 });
    expect(await ws.nextJson((f) => f.type === 'exit')).toMatchObject({ exitCode: null, signal: 9 });
    // DELETE answers once they are gone: nothing is left, no zombie of ours.
    for (const pid of pids) {
      const info = readProc(pid);
      expect(info === null || info.state === 'Z').toBe(true);
    }
    expect(taggedPids(tag)).toEqual([]);
    expect(Date.now() - started).toBeLessThan(8000);
    await waitFor(() => ptyFds() <= fdsBefore, 3000, 'pty fds released');
    const history = await d.api('GET', `/api/sessions/${s.id}/history`);
    expect(history.text).toContain('spawned-all');
  });

  it('closing a session ends processes that left the tree and dropped the tag (setsid + env -i, fork+setsid+execve with an empty env)', async () => {
    const escapees = ['sleep 7004', '/bin/sleep 7005', 'sleep 7007'];
    const found = new Map<string, number[]>();
    // Started outside the session: closing it must not touch this one.
    const outsider = spawn('sleep', ['7006'], { stdio: 'ignore' });
    found.set('sleep 7006', [outsider.pid!]);
    try {
      const s = await d.create({ agent: 'shell' });
      // Another session's escapee holds another terminal: it ends with its own session only.
      const other = await d.create({ agent: 'shell' });
      const ws = d.socket(`/api/sessions/${s.id}/ws`);
      const otherWs = d.socket(`/api/sessions/${other.id}/ws`);
      await ws.nextJson((f) => f.type === 'snapshot');
      await otherWs.nextJson((f) => f.type === 'snapshot');
      ws.sendBytes(
        `setsid env -u ${SESSION_TAG_ENV} sleep 7004 & setsid env -i /bin/sleep 7005 & ` +
          `python3 -c "import os; os.fork() == 0 and (os.setsid(), os.execve('/bin/sleep', ['sleep', '7007'], {}))"; echo spawned-$((6*7))\r`,
      );
      otherWs.sendBytes('setsid env -i /bin/sleep 7008 & echo spawned-$((6*7))\r');
      await ws.waitOutput('spawned-42');
      await otherWs.waitOutput('spawned-42');
      for (const command of [...escapees, '/bin/sleep 7008']) {
        found.set(command, await waitFor(() => (pidsRunning(command).length === 1 ? pidsRunning(command) : null), 5000, command));
      }
      const [otherEscapee] = found.get('/bin/sleep 7008')!;
      const pids = escapees.map((command) => found.get(command)![0]);

      // They really escaped both nets of the old close: outside the tree, without the tag.
      const session = d.app.pool.get(s.id);
      const tree = new ProcessTable().descendants(session.record.pid!);
      const tagged = taggedPids(session.record.tag!);
      for (const pid of pids) {
        expect(tree).not.toContain(pid);
        expect(tagged).not.toContain(pid);
      }

      const res = await d.api('DELETE', `/api/sessions/${s.id}`);
      expect(res.status).toBe(200);
      expect(res.json.session.state).toBe('closed');
      // DELETE answers once they are gone.
      expect(pids.filter((pid) => !gone(pid))).toEqual([]);
      expect(gone(outsider.pid!)).toBe(false);
      expect(gone(otherEscapee)).toBe(false);

      expect((await d.api('DELETE', `/api/sessions/${other.id}`)).status).toBe(200);
      expect(gone(otherEscapee)).toBe(true);
      ws.close();
      otherWs.close();
    } finally {
      endLeftovers(found);
    }
  });

  it('an agent that exits by itself takes along what it left, also processes that left the tree and dropped the tag', async () => {
    const found = new Map<string, number[]>();
    try {
      const s = await d.create({ agent: 'shell' });
      const ws = d.socket(`/api/sessions/${s.id}/ws`);
      await ws.nextJson((f) => f.type === 'snapshot');
      ws.sendBytes('sleep 7010 & setsid env -i /bin/sleep 7011 & echo spawned-$((6*7))\r');
      await ws.waitOutput('spawned-42');
      for (const command of ['sleep 7010', '/bin/sleep 7011']) {
        found.set(command, await waitFor(() => (pidsRunning(command).length === 1 ? pidsRunning(command) : null), 5000, command));
      }
      const [escapee] = found.get('/bin/sleep 7011')!;
      expect(taggedPids(d.app.pool.get(s.id).record.tag!)).not.toContain(escapee);
      ws.sendBytes('exit 0\r');
      expect(await ws.nextJson((f) => f.type === 'exit')).toMatchObject({ exitCode: 0 });
      for (const [command, [pid]] of found) await waitFor(() => gone(pid), 6_000, `${command} to end with the agent`);
      ws.close();
    } finally {
      endLeftovers(found);
    }
  });
});
