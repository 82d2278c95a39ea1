// Usage: npx tsc -p . && [SIZE=50] [N=4] [STORE=memory] [DARGS="--cpu-prof ..."] node bench/experiments/flood.js
// agentd alone: N floods of SIZE MiB through a session to a socket client; MB/s and the daemon's CPU per MB of each (quick A/B of an idea, no reference).
const lib = require('../../dist/bench/lib.js');
const SIZE = +(process.env.SIZE || 50), N = +(process.env.N || 4);
(async () => {
  const file = lib.base64File(SIZE * 1024 * 1024);
  const expected = lib.ttyBytesOf(file);
  const d = await lib.startDaemon({ agents: { cat: { command: 'bash', args: ['-c', 'printf R; read -r _; exec cat "$0"', file] } }, store: process.env.STORE || 'sqlite', execArgv: (process.env.DARGS || '').split(' ').filter(Boolean) });
  console.log('daemon pid', d.pid);
  try {
    for (let r = 0; r < N; r++) {
      const id = await d.create('cat');
      const c = await lib.TermClient.connect(d, id);
      await lib.waitFor(() => c.head.includes('R'), 10000, 'R');
      await lib.sleep(200);
      const cpu0 = await d.cpuMs(); const start = c.position; let last = 0;
      const t0 = performance.now();
      c.onBytes = () => { last = performance.now(); };
      c.send('\n');
      await lib.waitFor(() => c.position - start >= expected + 2 || c.exited, 120000, 'flood', 5);
      const cpu = (await d.cpuMs()) - cpu0;
      const mb = (c.position - start) / 1048576;
      console.log(`round ${r}: ${(mb / ((last - t0) / 1000)).toFixed(1)} MB/s, daemon ${(cpu / mb).toFixed(2)} ms/MB, resyncs ${c.resyncs}`);
      c.close(); await d.api('DELETE', `/api/sessions/${id}`); await d.forgetEnded();
    }
  } finally { await d.stop(); }
})().catch((e) => { console.error(e); process.exit(1); });
