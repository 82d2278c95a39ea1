// Usage: npx tsc -p . && [SETTLE=ms] node bench/experiments/echo-sessions.js
// Echo p50 of each 500-keystroke block over four fresh sessions in one daemon: how much a block median moves.
const lib = require('../../dist/bench/lib.js');
(async () => {
  const d = await lib.startDaemon({ agents: { echo: { command: 'bash', args: ['-c', 'stty raw -echo; printf R; exec cat'] } } });
  try {
    for (let s = 0; s < 4; s++) {
      const id = await d.create('echo');
      const c = await lib.TermClient.connect(d, id);
      await lib.sleep(+process.env.SETTLE || 0);
      let waiting = null;
      c.onBytes = (b) => { if (waiting && b.includes(waiting.k)) { const w = waiting; waiting = null; w.r(); } };
      const key = async (k) => { const t = performance.now(); await new Promise((r) => { waiting = { k, r }; c.send(Buffer.from([k])); }); return (performance.now() - t) * 1000; };
      const out = [];
      for (let blk = 0; blk < 8; blk++) { const lat = []; for (let i = 0; i < 500; i++) lat.push(await key(97 + (i % 26))); lat.sort((x, y) => x - y); out.push(lat[250].toFixed(0)); }
      console.log(`session ${s}: block p50s ${out.join(' ')}`);
      c.close(); await d.api('DELETE', `/api/sessions/${id}`);
    }
  } finally { await d.stop(); }
})().catch((e) => { console.error(e); process.exit(1); });
