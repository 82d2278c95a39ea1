// Usage: npx tsc -p . && [N=10000] node bench/experiments/echo-threads.js [native-relay]
// CPU per keystroke by thread (user and system, from /proc/PID/task/*/stat) and voluntary context switches, for agentd
// (one session) or, with `native-relay`, for the native relay built by core.js into os.tmpdir(). No timing figures:
// see echo-servers.js for those.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const WebSocket = require('ws');
const lib = require('../../dist/bench/lib.js');
const ARGS = ['bash', '-c', 'stty raw -echo; printf R; exec cat'];
const N = +(process.env.N || 10000);

function tasks(pid) {
  const out = new Map();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.split(') ')[1].split(' ');
      const vcs = Number(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').match(/^voluntary_ctxt_switches:\s+(\d+)/m)[1]);
      out.set(tid, { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), user: +f[11] * 10, sys: +f[12] * 10, vcs });
    } catch {
      // The thread ended.
    }
  }
  return out;
}

async function type(send, setOnData) {
  let waiting = null, ready = false;
  setOnData((b) => {
    if (!ready) return void (ready = b.includes(82));
    if (waiting && b.includes(waiting.k)) { const w = waiting; waiting = null; w.r(); }
  });
  return async (pid) => {
    while (!ready) await lib.sleep(5);
    for (let i = 0; i < 200; i++) await new Promise((r) => { waiting = { k: 97 + (i % 26), r }; send(Buffer.from([97 + (i % 26)])); });
    const before = tasks(pid);
    for (let i = 0; i < N; i++) await new Promise((r) => { waiting = { k: 97 + (i % 26), r }; send(Buffer.from([97 + (i % 26)])); });
    const after = tasks(pid);
    console.log(`${N} keystrokes, per keystroke (us of CPU, 10 ms ticks):`);
    for (const [tid, a] of after) {
      const b = before.get(tid) ?? { user: 0, sys: 0, vcs: 0 };
      const user = ((a.user - b.user) * 1000) / N, sys = ((a.sys - b.sys) * 1000) / N, vcs = (a.vcs - b.vcs) / N;
      if (user + sys > 0 || vcs > 0.01) console.log(`  thread ${tid} ${a.name.padEnd(16)} user ${user.toFixed(1)}  system ${sys.toFixed(1)}  voluntary switches ${vcs.toFixed(2)}`);
    }
  };
}

(async () => {
  if (process.argv[2] === 'native-relay') {
    const relay = spawn(path.join(os.tmpdir(), 'agentd-bench-native-relay'), ARGS, { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise((res) => relay.stdout.once('data', (d) => res(JSON.parse(d.toString()).port)));
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
      await new Promise((r) => ws.once('open', r));
      await (await type((k) => ws.send(k, { binary: true }), (cb) => ws.on('message', cb)))(relay.pid);
      ws.terminate();
    } finally {
      relay.kill('SIGKILL');
    }
    return;
  }
  const d = await lib.startDaemon({ agents: { echo: { command: ARGS[0], args: ARGS.slice(1) } } });
  try {
    const t = await lib.TermClient.connect(d, await d.create('echo'));
    const run = await type((k) => t.send(k), (cb) => {
      t.onBytes = cb;
      if (t.head.includes('R')) cb(Buffer.from('R'));
    });
    await run(d.pid);
    t.close();
  } finally {
    await d.stop();
  }
})().catch((e) => { console.error(e); process.exit(1); });
