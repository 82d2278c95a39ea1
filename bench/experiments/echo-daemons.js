// Usage: npx tsc -p . && [DAEMONS=3] [N=2000] [ROUNDS=11] node bench/experiments/echo-daemons.js
// Keystroke echo (as bench/core.ts) through several identical agentd daemons, the lean Node relay (lean-relay.js) and
// the floor (node-pty in this process), rotated round by round, a fresh session each round. For each agentd round it
// also prints where the scheduler ran things: the share of samples (every 3 ms) in which the daemon's main thread was
// last on the same CPU as this process (the client), and as the echoing program. Shows how much of the echo figure is
// placement: identical daemons differ by tens of microseconds, and a round is fast when client and daemon share a CPU.
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');
const pty = require('node-pty');
const lib = require('../../dist/bench/lib.js');
const { keystrokes: timed } = require('./keystrokes');
const ARGS = ['bash', '-c', 'stty raw -echo; printf R; exec cat'];
const N = +(process.env.N || 2000), WARMUP = 200, ROUNDS = +(process.env.ROUNDS || 11), DAEMONS = +(process.env.DAEMONS || 3);
const pct = (a, p) => [...a].sort((x, y) => x - y)[Math.floor((a.length * p) / 100)];
/** The CPU `pid` last ran on (field 39 of /proc/PID/stat), -1 if gone. */
const cpuOf = (pid) => {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return +st.slice(st.lastIndexOf(')') + 2).split(' ')[36];
  } catch {
    return -1;
  }
};

/** Times N keystrokes after WARMUP; with `watch` ({daemon, program}), `out.place` = same-CPU shares in percent. */
function keystrokes(send, onData, readyAlready, watch) {
  let samples = 0, withClient = 0, withProgram = 0, timer = null;
  return timed(send, onData, readyAlready, {
    n: N,
    warmup: WARMUP,
    start: () => {
      if (!watch) return;
      timer = setInterval(() => {
        const d = cpuOf(watch.daemon);
        samples++;
        if (d === cpuOf(process.pid)) withClient++;
        if (d === cpuOf(watch.program)) withProgram++;
      }, 3);
    },
    end: (out) => {
      if (!timer) return;
      clearInterval(timer);
      out.place = `${Math.round((100 * withClient) / samples)}/${Math.round((100 * withProgram) / samples)}`;
    },
  });
}

(async () => {
  const lean = spawn('node', [path.join(__dirname, 'lean-relay.js'), ...ARGS], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MODE: 'js', WRITE: 'direct' } });
  const port = await new Promise((res) => lean.stdout.once('data', (d) => res(JSON.parse(d.toString()).port)));
  const systems = {
    floor: async () => {
      const p = pty.spawn(ARGS[0], ARGS.slice(1), { cols: 120, rows: 40, encoding: null });
      try { return await keystrokes((k) => p.write(k), (cb) => p.onData(cb), false); } finally { p.kill('SIGKILL'); }
    },
    lean: async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
      await new Promise((r) => ws.once('open', r));
      const program = () => fs.readFileSync(`/proc/${lean.pid}/task/${lean.pid}/children`, 'utf8').trim().split(' ')[0];
      try { return await keystrokes((k) => ws.send(k, { binary: true }), (cb) => ws.on('message', cb), false, { daemon: lean.pid, get program() { return program(); } }); } finally { ws.terminate(); }
    },
  };
  const daemons = [];
  for (let i = 1; i <= DAEMONS; i++) {
    const d = await lib.startDaemon({ agents: { echo: { command: ARGS[0], args: ARGS.slice(1) } } });
    daemons.push(d);
    systems[`agentd #${i}`] = async () => {
      const id = await d.create('echo');
      const program = (await d.api('GET', `/api/sessions/${id}`)).json.session.pid;
      const t = await lib.TermClient.connect(d, id);
      try { return await keystrokes((k) => t.send(k), (cb) => (t.onBytes = cb), t.head.includes('R'), { daemon: d.pid, program }); } finally { t.close(); await d.api('DELETE', `/api/sessions/${id}`); }
    };
  }
  try {
    const names = Object.keys(systems);
    const res = Object.fromEntries(names.map((n) => [n, { p50: [], place: [] }]));
    for (let r = 0; r <= ROUNDS; r++) {
      for (const n of names.map((_, i) => names[(i + r) % names.length])) {
        const s = await systems[n]();
        if (r === 0) continue; // warm-up round
        res[n].p50.push(pct(s, 50));
        if (s.place) res[n].place.push(s.place);
      }
    }
    console.log(`load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${N} keystrokes x ${ROUNDS} rounds`);
    for (const n of names) {
      const ratio = pct(res[n].p50.map((x, i) => x / res.floor.p50[i]), 50);
      console.log(`${n.padEnd(10)} p50 ${pct(res[n].p50, 50).toFixed(0).padStart(4)} us, ratio ${ratio.toFixed(2)}; by round: ${res[n].p50.map((x) => x.toFixed(0)).join(' ')}`);
      if (res[n].place.length) console.log(`${''.padEnd(10)} same CPU as the client / the program, % of samples: ${res[n].place.join(' ')}`);
    }
  } finally {
    lean.kill('SIGKILL');
    for (const d of daemons) await d.stop();
  }
})().catch((e) => { console.error(e); process.exit(1); });
