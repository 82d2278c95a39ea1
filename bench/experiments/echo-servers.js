// Usage: npx tsc -p . && [N=2000] [ROUNDS=5] [NATIVE_OUT=/tmp/native-out.node] node bench/experiments/echo-servers.js
// Keystroke echo (as bench/core.ts) through several servers in one run, rotated round by round, with each server's CPU
// per keystroke: the floor (node-pty in this process), the native relay (bench/native-relay.c, built by core.js into
// os.tmpdir()), lean-relay.js with input written directly or through node-pty's pool, lean-relay.js with native output
// and with a native reader when NATIVE_OUT (native-out.c) is built, and agentd. p50 per round, median over rounds;
// ratio = p50 / floor p50, round by round. CPU per keystroke is the server process's (every thread), over the timed
// keystrokes only (not the warm-up, spawn or teardown); /proc counts in 10 ms ticks, so use N >= 2000.
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');
const pty = require('node-pty');
const lib = require('../../dist/bench/lib.js');
const { keystrokes: timed } = require('./keystrokes');
const ARGS = ['bash', '-c', 'stty raw -echo; printf R; exec cat'];
const N = +(process.env.N || 2000), WARMUP = 200, ROUNDS = +(process.env.ROUNDS || 5);
const NATIVE_RELAY = path.join(os.tmpdir(), 'agentd-bench-native-relay');
const NATIVE_OUT = process.env.NATIVE_OUT || '/tmp/native-out.node';
const portOf = (p) => new Promise((res) => p.stdout.once('data', (d) => res(JSON.parse(d.toString()).port)));
const pct = (a, p) => [...a].sort((x, y) => x - y)[Math.floor((a.length * p) / 100)];

/** Times N keystrokes after WARMUP; `out.cpuUs` is `pid`'s CPU per timed keystroke (when a pid is given). */
function keystrokes(send, onData, readyAlready, pid) {
  let cpu0 = 0;
  return timed(send, onData, readyAlready, {
    n: N,
    warmup: WARMUP,
    start: () => pid && (cpu0 = lib.processCpuMs(pid)),
    end: (out) => (out.cpuUs = pid ? ((lib.processCpuMs(pid) - cpu0) * 1000) / N : null),
  });
}

async function viaSocket(port, pid) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  try { return await keystrokes((k) => ws.send(k, { binary: true }), (cb) => ws.on('message', cb), false, pid); } finally { ws.terminate(); }
}

(async () => {
  const procs = {};
  const start = (name, cmd, argv, env = {}) => (procs[name] = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } }));
  const lean = path.join(__dirname, 'lean-relay.js');
  if (fs.existsSync(NATIVE_RELAY)) start('native relay', NATIVE_RELAY, ARGS);
  start('lean js, direct', 'node', [lean, ...ARGS], { MODE: 'js', WRITE: 'direct' });
  start('lean js, pool', 'node', [lean, ...ARGS], { MODE: 'js', WRITE: 'pool' });
  if (fs.existsSync(NATIVE_OUT)) start('lean native out', 'node', [lean, ...ARGS], { MODE: 'native', WRITE: 'direct', NATIVE_OUT });
  if (fs.existsSync(NATIVE_OUT)) start('lean native read', 'node', [lean, ...ARGS], { MODE: 'native-read', WRITE: 'direct', NATIVE_OUT });
  const systems = {
    floor: async () => {
      const p = pty.spawn(ARGS[0], ARGS.slice(1), { cols: 120, rows: 40, encoding: null });
      try { return await keystrokes((k) => p.write(k), (cb) => p.onData(cb), false); } finally { p.kill('SIGKILL'); }
    },
  };
  for (const [name, p] of Object.entries(procs)) { const port = await portOf(p); systems[name] = () => viaSocket(port, p.pid); }
  const d = await lib.startDaemon({ agents: { echo: { command: ARGS[0], args: ARGS.slice(1) } } });
  systems.agentd = async () => {
    const id = await d.create('echo');
    const t = await lib.TermClient.connect(d, id);
    try { return await keystrokes((k) => t.send(k), (cb) => (t.onBytes = cb), t.head.includes('R'), d.pid); } finally { t.close(); await d.api('DELETE', `/api/sessions/${id}`); }
  };
  try {
    const names = Object.keys(systems);
    const res = Object.fromEntries(names.map((n) => [n, { p50: [], p99: [], cpu: [] }]));
    for (let r = 0; r <= ROUNDS; r++) {
      for (const n of names.map((_, i) => names[(i + r) % names.length])) {
        const s = await systems[n]();
        if (r === 0) continue; // warm-up round
        res[n].p50.push(pct(s, 50));
        res[n].p99.push(pct(s, 99));
        res[n].cpu.push(s.cpuUs);
      }
    }
    const med = (a) => pct(a, 50);
    console.log(`load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${N} keystrokes x ${ROUNDS} rounds`);
    for (const n of names) {
      const ratio = med(res[n].p50.map((x, i) => x / res.floor.p50[i]));
      console.log(`${n.padEnd(16)} p50 ${med(res[n].p50).toFixed(0).padStart(4)} us [${res[n].p50.map((x) => x.toFixed(0)).join(' ')}]  p99 ${med(res[n].p99).toFixed(0).padStart(5)} us  ratio ${ratio.toFixed(2)}  server CPU/keystroke ${res[n].cpu[0] === null ? '-' : `${med(res[n].cpu).toFixed(0)} us`}`);
    }
  } finally {
    for (const p of Object.values(procs)) p.kill('SIGKILL');
    await d.stop();
  }
})().catch((e) => { console.error(e); process.exit(1); });
