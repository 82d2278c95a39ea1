import { ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SESSION_TAG_ENV } from '../../../server/pty/kill';
import { ProcessTable, readProc } from '../../../server/pty/processes';
import { ProcResourceSampler } from '../../../server/health/ResourceSampler';
import { querySystemUnits, readProcUsage } from '../../../server/health/procStat';
import type { ProcessTarget, ResourceSample } from '../../../server/health/types';
import { withCpuLock } from '../../helpers/cpuLock';

const MiB = 2 ** 20;
/** Unique per run, so cleanup finds exactly what this file started. */
const TAG_PREFIX = `sampler-test-${process.pid}-`;

const children: ChildProcess[] = [];
const sampler = new ProcResourceSampler();
let workDir: string;

/** Starts `script` under bash in its own process group, tagged like a session's processes. */
function startTree(name: string, script: string): ProcessTarget {
  const tag = TAG_PREFIX + name;
  const child = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore', env: { ...process.env, [SESSION_TAG_ENV]: tag } });
  children.push(child);
  return { sessionId: name, rootPid: child.pid!, tag };
}

async function waitFor<T>(probe: () => Promise<T | null | undefined | false> | T | null | undefined | false, what: string, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function sampleOf(target: ProcessTarget): Promise<ResourceSample | undefined> {
  return (await sampler.sample([target])).get(target.sessionId);
}

function ourTaggedPids(): number[] {
  const pids: number[] = [];
  for (const [tag, list] of new ProcessTable().taggedAll(SESSION_TAG_ENV)) if (tag.startsWith(TAG_PREFIX)) pids.push(...list);
  return pids.filter((pid) => readProc(pid)?.state !== 'Z');
}

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'agentd-sampler-'));
});

/** Ends every process a test started, so that no busy loop outlives its test (another file's CPU test runs beside). */
async function endAll(): Promise<void> {
  for (const child of children.splice(0)) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // The group is already gone.
    }
  }
  // Those that left the tree (setsid) are found by their tag.
  for (const pid of ourTaggedPids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Exited meanwhile.
    }
  }
  await waitFor(() => ourTaggedPids().length === 0, 'every test process to be gone');
}

afterEach(endAll);

afterAll(async () => {
  await endAll();
  sampler.dispose();
  rmSync(workDir, { recursive: true, force: true });
});

describe('ProcResourceSampler on real processes', () => {
  it("counts a grandchild's RSS in its session and a setsid process by its tag, each in the right session", async () => {
    const big = startTree('big', 'python3 -c "x=bytearray(100*2**20); import time; time.sleep(60)" & wait');
    const away = startTree('away', 'setsid -f python3 -c "x=bytearray(50*2**20); import time; time.sleep(60)"; sleep 60');
    const targets = [big, away];

    const samples = await waitFor(async () => {
      const got = await sampler.sample(targets);
      const b = got.get('big');
      const a = got.get('away');
      return b && a && b.memoryBytes >= 100 * MiB && a.memoryBytes >= 50 * MiB && got;
    }, 'both allocations to show');

    const bigSample = samples.get('big')!;
    const awaySample = samples.get('away')!;
    expect(bigSample.memoryBytes).toBeLessThan(150 * MiB);
    expect(awaySample.memoryBytes).toBeLessThan(100 * MiB);
    expect(bigSample.pids).toContain(big.rootPid);
    expect(bigSample.pids.filter((pid) => awaySample.pids.includes(pid))).toEqual([]);

    // The 50 MB process really left the tree: only its tag ties it to the session.
    const table = new ProcessTable();
    const inTree = new Set(table.descendants(away.rootPid!));
    const leavers = awaySample.pids.filter((pid) => !inTree.has(pid));
    expect(leavers).toHaveLength(1);
    expect(table.byPid.get(leavers[0])!.pgid).toBe(leavers[0]); // its own session and group
    expect(readProcUsage(leavers[0])!.rssPages).toBeGreaterThan(0);

    // Without a root pid the tag alone finds the same processes (every one of them carries it).
    const byTagOnly = await sampleOf({ ...away, rootPid: null });
    expect([...byTagOnly!.pids].sort()).toEqual([...awaySample.pids].sort());
  });

  it('counts a process that left the tree and dropped the tag by the terminal it still holds', async () => {
    // A stand-in for the session's /dev/pts/N: the sampler matches the descriptor's path, whatever it names.
    const tty = join(workDir, 'fake-tty');
    writeFileSync(tty, '');
    const held = startTree('held', `setsid -f env -i "$(command -v python3)" -c "x=bytearray(40*2**20); import time; time.sleep(60)" < ${tty} & sleep 60`);
    const target = { ...held, tty };
    const escapee = await waitFor(() => {
      const table = new ProcessTable();
      const inTree = new Set(table.descendants(held.rootPid!));
      return table.holding(tty).find((pid) => !inTree.has(pid));
    }, 'the escapee to hold the file');
    try {
      const sample = await waitFor(async () => {
        const s = await sampleOf(target);
        return s && s.pids.includes(escapee) && s.memoryBytes >= 40 * MiB && s;
      }, 'the escapee to be counted');
      expect(sample.pids).toContain(escapee);
      // Without the terminal it is not found: it has no tag and is not in the tree.
      expect((await sampleOf(held))?.pids ?? []).not.toContain(escapee);
    } finally {
      process.kill(escapee, 'SIGKILL');
    }
  });

  it('reads ~100% CPU for a busy-looping grandchild (what it really got, under load)', async () => {
    await withCpuLock(async () => {
      const spin = startTree('spin', 'python3 -c "while True: pass" & wait');
      const first = await waitFor(async () => {
        const s = await sampleOf(spin);
        return s && s.cpuPercent > 30 && s;
      }, 'the loop to show');
      const loop = first.pids.find((pid) => pid !== spin.rootPid)!;
      const { clockTicks } = await querySystemUnits();
      // Later samples are rates since the previous one. The sampler reads the loop's ticks at some moment inside each
      // sampleOf call, so the truth is bracketed by readings taken just before and just after the calls: the rate must lie
      // between the fewest ticks over the longest possible span and the most ticks over the shortest one.
      // Alone on a core it reads ~100; with jest's other worker busy it gets less, and must read that.
      const mark = () => ({ at: performance.now(), ticks: cpuTicksOf(loop) });
      const percent = (ticks: number, ms: number) => (ticks / clockTicks / (ms / 1000)) * 100;
      let before = mark();
      await sampleOf(spin);
      let after = mark();
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 400));
        const b = mark();
        const rate = (await sampleOf(spin))!.cpuPercent;
        const a = mark();
        const low = percent(b.ticks - after.ticks, a.at - before.at);
        const high = percent(a.ticks - before.ticks, b.at - after.at);
        // Other suites' busy loops may share the two cores: the figure must follow what the loop really got.
        expect(rate).toBeGreaterThan(5);
        expect(rate).toBeLessThanOrEqual(105); // one thread: at most a core, plus a tick of rounding
        // A tick each side of rounding (10 ms of a ~400 ms window is 2.5 %).
        expect(rate).toBeGreaterThanOrEqual(low - 6);
        expect(rate).toBeLessThanOrEqual(high + 6);
        before = b;
        after = a;
      }
    });
  });

  it('counts the CPU of the short-lived commands a shell loop runs (only ever seen in the shell\'s reaped-children time)', async () => {
    await withCpuLock(async () => {
      const forks = startTree('forks', 'while :; do /bin/true; done');
      const shell = forks.rootPid!;
      const { clockTicks } = await querySystemUnits();
      // The truth: the shell's own and its reaped children's ticks, read around each sample as in the test above.
      const mark = () => ({ at: performance.now(), ticks: cpuTicksOf(shell, true) });
      const percent = (ticks: number, ms: number) => (ticks / clockTicks / (ms / 1000)) * 100;
      let before = mark();
      await sampleOf(forks);
      let after = mark();
      const rates: Array<{ rate: number; low: number; high: number }> = [];
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 500));
        const b = mark();
        const rate = (await sampleOf(forks))!.cpuPercent;
        const a = mark();
        rates.push({ rate, low: percent(b.ticks - after.ticks, a.at - before.at), high: percent(a.ticks - before.ticks, b.at - after.at) });
        before = b;
        after = a;
      }
      // Counting only the processes alive at each sample read 14-19 % of a loop that used a whole core.
      for (const { rate, low, high } of rates) {
        expect(high).toBeGreaterThan(20); // the loop did burn CPU (less than a core when other suites' loops run beside it)
        expect(rate).toBeGreaterThanOrEqual(low * 0.6 - 5);
        expect(rate).toBeLessThanOrEqual(high * 1.3 + 10);
      }
    });
  });

  // Whatever the shape of the work, the readings must add up to the CPU the tree really used: the root's own and its
  // reaped descendants' ticks once everything has ended, independently of the sampler. A child that outlives a tick
  // was counted twice by the first version of the reaped-children sum; a wrapper chain (sh -c sh -c) ending within
  // a tick, and a parent that reaps late, too.
  it.each([
    ['children that outlive a tick', 'for i in 1 2 3 4; do python3 BURN 0.7; sleep 0.2; done'],
    ['a wrapper chain that ends within a tick', 'for i in 1 2 3 4 5 6; do sh -c "sh -c \'python3 BURN 0.3\'; true"; sleep 0.2; done'],
    ['a parent that reaps late', 'python3 -c "import subprocess, sys, time; p = subprocess.Popen([sys.executable, \'BURN\', \'1.5\']); time.sleep(2.5); p.wait()"'],
  ])('adds up to the CPU really used: %s', async (_, work) => {
    await withCpuLock(async () => {
      const burn = join(workDir, 'burn.py');
      // Burns that many seconds of CPU (not of wall time: on a busy machine it takes longer, and burns the same).
      writeFileSync(burn, 'import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass\n');
      const tree = startTree('sum', `sleep 0.6; ${work.split('BURN').join(burn)}; sleep 60`);
      const root = tree.rootPid!;
      await waitFor(async () => (await sampleOf(tree))?.pids.includes(root), 'the root to be sampled');
      const start = { at: performance.now(), ticks: cpuTicksOf(root, true) };
      let last = performance.now();
      let cpuSeconds = 0;
      // Until the work is over (all of it takes about 3 s; then only the final sleep is left) and two ticks saw quiet.
      let quietTicks = 0;
      while (quietTicks < 2 || performance.now() - start.at < 3_000) {
        await new Promise((r) => setTimeout(r, 500));
        const sample = (await sampleOf(tree))!;
        const now = performance.now();
        cpuSeconds += (sample.cpuPercent / 100) * ((now - last) / 1000);
        last = now;
        quietTicks = sample.cpuPercent < 5 ? quietTicks + 1 : 0;
      }
      const { clockTicks } = await querySystemUnits();
      const truth = (cpuTicksOf(root, true) - start.ticks) / clockTicks;
      expect(truth).toBeGreaterThan(0.8); // the work did burn CPU
      expect(cpuSeconds).toBeGreaterThan(truth * 0.75);
      expect(cpuSeconds).toBeLessThan(truth * 1.25 + 0.1);
    });
  }, 30_000);

  it('counts once the child of a process that left the tree (found by its tag) and reaps late', async () => {
    await withCpuLock(async () => {
      const burn = join(workDir, 'burn.py');
      writeFileSync(burn, 'import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass\n');
      // The zombie's environment reads empty, so only its tagged parent leads to it: once it dropped out, its total
      // was counted again when the parent reaped it (about twice the CPU used, in one spike).
      const detached = startTree('detached', `setsid -f python3 -c "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '${burn}', '1.5']); time.sleep(2.5); p.wait(); time.sleep(1)"; sleep 60`);
      await sampleOf(detached);
      let last = performance.now();
      let cpuSeconds = 0;
      let peak = 0;
      const end = last + 4_500;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 500));
        const sample = (await sampleOf(detached))!;
        const now = performance.now();
        cpuSeconds += (sample.cpuPercent / 100) * ((now - last) / 1000);
        peak = Math.max(peak, sample.cpuPercent);
        last = now;
      }
      expect(cpuSeconds).toBeGreaterThan(1.5 * 0.75);
      expect(cpuSeconds).toBeLessThan(1.5 * 1.25 + 0.2);
      expect(peak).toBeLessThan(150); // one burner: about a core at most, never a spike
    });
  }, 30_000);

  it('shrugs off processes that vanish between the listing and the read', async () => {
    await withCpuLock(async () => {
      const churn = startTree('churn', 'while :; do /bin/true; done');
      for (let i = 0; i < 30; i++) {
        const sample = await sampleOf(churn);
        expect(sample?.pids).toContain(churn.rootPid);
        expect(Number.isFinite(sample!.cpuPercent)).toBe(true);
      }
    });
  });

  it('leaves zombies out and parses command names with spaces and parentheses', async () => {
    const odd = join(workDir, 'we) ird (name');
    copyFileSync('/bin/sleep', odd);
    // The short sleep is never reaped: `exec` replaced the bash that would have waited for it.
    const target = startTree('odd', `sleep 0.05 & exec '${odd}' 60`);
    const zombie = await waitFor(() => {
      const table = new ProcessTable();
      return table.descendants(target.rootPid!).find((pid) => table.byPid.get(pid)!.state === 'Z');
    }, 'a zombie child');
    const sample = (await sampleOf(target))!;
    expect(sample.pids).toEqual([target.rootPid]);
    expect(sample.pids).not.toContain(zombie);
    expect(sample.memoryBytes).toBeGreaterThan(0);
  });

  it('returns nothing for a target with no process and nothing at all for no targets', async () => {
    expect(await sampler.sample([{ sessionId: 'none', rootPid: null, tag: TAG_PREFIX + 'nobody' }])).toEqual(new Map());
    expect(await sampler.sample([])).toEqual(new Map());
  });

  it('sees the new owner of a reused pid (forced with ns_last_pid when root)', async () => {
    if (!canForcePid()) {
      console.warn('skipped: /proc/sys/kernel/ns_last_pid is not writable');
      return;
    }
    const first = startTree('reuse', 'exec sleep 60');
    const pid = first.rootPid!;
    await waitFor(async () => (await sampleOf(first))?.pids.includes(pid), 'the first owner to be sampled');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => readProc(pid) === null, 'the first owner to be reaped');

    // Any fork on the machine between the write and the spawn takes the pid (other test files run beside this
    // one): try in bursts, for long enough that a busy machine gets a quiet moment.
    const second = await waitFor(() => {
      for (let attempt = 0; attempt < 10; attempt++) {
        writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
        const next = startTree('reuse', 'exec python3 -c "x=bytearray(30*2**20); import time; time.sleep(60)"');
        if (next.rootPid === pid) return next;
        process.kill(-next.rootPid!, 'SIGKILL');
      }
      return null;
    }, 'a process to get the same pid', 30_000);
    const sample = await waitFor(async () => {
      const s = await sampleOf(second);
      return s && s.memoryBytes >= 30 * MiB && s;
    }, 'the new owner to be sampled');
    expect(sample.pids).toEqual([pid]);
    expect(sample.cpuPercent).toBeGreaterThanOrEqual(0);
  }, 60_000);
});

/** utime + stime of a process (with `reaped`, plus its reaped children's cutime + cstime), parsed here independently of the sampler. */
function cpuTicksOf(pid: number, reaped = false): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'latin1').replace(/^.*\) /s, '').split(' ');
  return Number(fields[11]) + Number(fields[12]) + (reaped ? Number(fields[13]) + Number(fields[14]) : 0);
}

function canForcePid(): boolean {
  try {
    accessSync('/proc/sys/kernel/ns_last_pid', constants.W_OK);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}
