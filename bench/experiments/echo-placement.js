// Usage: npx tsc -p . && [N=2000] [ROUNDS=7] node bench/experiments/echo-placement.js
// Keystroke echo (as bench/core.ts) with the CPU placement controlled: this process (the client) is pinned to CPU 0;
// each server (all its threads) is pinned to CPU 0 too ("same") or to CPU 1 ("split"); the echoing program is left
// free to run on either. Servers: the native relay (bench/native-relay.c, built by core.js into os.tmpdir()), the lean
// Node relay (lean-relay.js, input written directly) and agentd; the floor is node-pty in this process. p50 per round
// (a fresh PTY each round), median over rounds, ratio to the floor round by round. Needs 2+ CPUs and `taskset`.
// NATIVE_OUT=/tmp/native-out.node (see native-out.c) adds the lean relay with its output sent by the native addon;
// ONLY=agentd leaves the relays out. NATIVE_AB=1 adds agentd with its native output path off (AGENTD_NATIVE_OUTPUT=off); INPUT_AB=1 adds agentd with its
// native input path off (AGENTD_NATIVE_INPUT=off).
const { execFileSync, spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');
const pty = require('node-pty');
const lib = require('../../dist/bench/lib.js');
const { keystrokes: timed } = require('./keystrokes');
const ARGS = ['bash', '-c', 'stty raw -echo; printf R; exec cat'];
const N = +(process.env.N || 2000), WARMUP = 200, ROUNDS = +(process.env.ROUNDS || 7);
const NATIVE_RELAY = path.join(os.tmpdir(), 'agentd-bench-native-relay');
const pct = (a, p) => [...a].sort((x, y) => x - y)[Math.floor((a.length * p) / 100)];
const pin = (mask, pid, all = true) => execFileSync('taskset', [...(all ? ['-a'] : []), '-p', mask, String(pid)], { stdio: 'ignore' });
const childrenOf = (pid) => fs.readdirSync(`/proc/${pid}/task`).flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean));
/** The echoing program (a child of `server`) may run on any CPU, whatever the server's pinning gave it. */
const freeChildren = (server) => { for (const c of childrenOf(server)) pin('3', c, false); };

const keystrokes = (send, onData, readyAlready) => timed(send, onData, readyAlready, { n: N, warmup: WARMUP });

async function viaRelay(port, pid) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
  let ready = false;
  const early = (d) => (ready ||= d.includes(82));
  ws.on('message', early);
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  while (!ready) await lib.sleep(5);
  ws.off('message', early);
  freeChildren(pid);
  try { return await keystrokes((k) => ws.send(k, { binary: true }), (cb) => ws.on('message', cb), true); } finally { ws.terminate(); }
}

(async () => {
  if (os.cpus().length < 2) throw new Error('needs two CPUs');
  pin('1', process.pid);
  const portOf = (p) => new Promise((res) => p.stdout.once('data', (d) => res(JSON.parse(d.toString()).port)));
  const procs = [];
  const systems = {
    floor: async () => {
      const p = pty.spawn(ARGS[0], ARGS.slice(1), { cols: 120, rows: 40, encoding: null });
      pin('3', p.pid, false);
      try { return await keystrokes((k) => p.write(k), (cb) => p.onData(cb), false); } finally { p.kill('SIGKILL'); }
    },
  };
  for (const where of ['same', 'split']) {
    const mask = where === 'same' ? '1' : '2';
    const relays = { 'lean relay': ['node', [path.join(__dirname, 'lean-relay.js'), ...ARGS]] };
    if (process.env.NATIVE_OUT) relays['lean native out'] = ['node', [path.join(__dirname, 'lean-relay.js'), ...ARGS], { MODE: 'native' }];
    if (process.env.NATIVE_OUT) relays['lean native both'] = ['node', [path.join(__dirname, 'lean-relay.js'), ...ARGS], { MODE: 'native-both' }];
    if (fs.existsSync(NATIVE_RELAY)) relays['native relay'] = [NATIVE_RELAY, ARGS];
    // ONLY=agentd: agentd's variants and the floor only (a longer A/B in the same time).
    for (const [name, [cmd, argv, env]] of Object.entries(process.env.ONLY === 'agentd' ? {} : relays)) {
      const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MODE: 'js', WRITE: 'direct', ...env } });
      procs.push(p);
      const port = await portOf(p);
      pin(mask, p.pid);
      systems[`${name}, ${where}`] = () => viaRelay(port, p.pid);
    }
    // agentd, and with AGENTD_NATIVE_OUTPUT=off (output leaves through JavaScript) when NATIVE_AB=1, with
    // AGENTD_NATIVE_INPUT=off (keystrokes are read by ws) when INPUT_AB=1.
    const variants = [['', null], ...(process.env.NATIVE_AB ? [[' (native out off)', 'AGENTD_NATIVE_OUTPUT']] : []), ...(process.env.INPUT_AB ? [[' (native in off)', 'AGENTD_NATIVE_INPUT']] : [])];
    for (const [label, off] of variants) {
      if (off) process.env[off] = 'off';
      const d = await lib.startDaemon({ agents: { echo: { command: ARGS[0], args: ARGS.slice(1) } } });
      if (off) delete process.env[off];
      procs.push({ kill: () => d.stop() });
      pin(mask, d.pid);
      systems[`agentd${label}, ${where}`] = async () => {
        const id = await d.create('echo');
        pin('3', (await d.api('GET', `/api/sessions/${id}`)).json.session.pid, false);
        const t = await lib.TermClient.connect(d, id);
        try { return await keystrokes((k) => t.send(k), (cb) => (t.onBytes = cb), t.head.includes('R')); } finally { t.close(); await d.api('DELETE', `/api/sessions/${id}`); }
      };
    }
  }
  try {
    const names = Object.keys(systems);
    const res = Object.fromEntries(names.map((n) => [n, []]));
    for (let r = 0; r <= ROUNDS; r++) {
      for (const n of names.map((_, i) => names[(i + r) % names.length])) {
        const s = await systems[n]();
        if (r > 0) res[n].push(pct(s, 50));
      }
    }
    console.log(`load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${N} keystrokes x ${ROUNDS} rounds; client on CPU 0`);
    for (const n of names) {
      const ratio = pct(res[n].map((x, i) => x / res.floor[i]), 50);
      console.log(`${n.padEnd(28)} p50 ${pct(res[n], 50).toFixed(0).padStart(4)} us [${res[n].map((x) => x.toFixed(0)).join(' ')}]  ratio ${ratio.toFixed(2)}`);
    }
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
  }
})().catch((e) => { console.error(e); process.exit(1); });
