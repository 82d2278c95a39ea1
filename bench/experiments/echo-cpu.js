// Usage: npx tsc -p . && [N=3000] [DARGS=...] node bench/experiments/echo-cpu.js
// The daemon's CPU per keystroke and the echo latency, agentd alone, three rounds of N keystrokes on one session.
const lib = require('../../dist/bench/lib.js');
(async () => {
  const d = await lib.startDaemon({ agents: { echo: { command: 'bash', args: ['-c', 'stty raw -echo; printf R; exec cat'] } }, execArgv: (process.env.DARGS||'').split(' ').filter(Boolean) });
  try {
    const id = await d.create('echo');
    const c = await lib.TermClient.connect(d, id);
    await lib.sleep(300);
    let waiting = null;
    c.onBytes = (b) => { if (waiting && b.includes(waiting.k)) { const w = waiting; waiting = null; w.r(); } };
    const N = +process.env.N || 3000;
    for (let round = 0; round < 3; round++) {
      const lat = []; const cpu0 = await d.cpuMs();
      for (let i = 0; i < N; i++) {
        const k = 97 + (i % 26); const t = performance.now();
        await new Promise((r) => { waiting = { k, r }; c.send(Buffer.from([k])); });
        lat.push((performance.now() - t) * 1000);
      }
      const cpu = (await d.cpuMs()) - cpu0;
      lat.sort((a, b) => a - b);
      console.log(`p50 ${lat[N/2|0].toFixed(0)} p90 ${lat[N*0.9|0].toFixed(0)} p99 ${lat[N*0.99|0].toFixed(0)}  daemon cpu/key ${(cpu*1000/N).toFixed(1)} us`);
    }
    c.close();
  } finally { await d.stop(); }
})().catch((e) => { console.error(e); process.exit(1); });
