// Usage: node bench/experiments/spinecho.js pool|sync|spin [us]
// Bare node-pty echo of one keystroke: written through node-pty (its thread pool), written directly, or written directly and the echo then polled for up to [us] instead of waiting on the event loop.
const pty = require('node-pty'); const fs = require('fs');
const mode = process.argv[2];
const p = pty.spawn('bash', ['-c', 'stty raw -echo; printf R; exec cat'], { cols: 80, rows: 24, encoding: null });
let onData; let started = false;
const buf = Buffer.alloc(65536);
p.onData((d) => { if (!started) { if (String(d).includes('R')) { started = true; setTimeout(go, 100); } return; } onData && onData(d); });
function spinRead(limitUs) {
  const t0 = process.hrtime.bigint(); const lim = BigInt(limitUs * 1000);
  for (;;) {
    try { const n = fs.readSync(p._fd, buf, 0, buf.length, null); if (n > 0) return buf.subarray(0, n); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
    if (process.hrtime.bigint() - t0 > lim) return null;
  }
}
async function go() {
  const lat = [];
  for (let i = 0; i < 2200; i++) {
    const t = process.hrtime.bigint();
    await new Promise((r) => {
      onData = () => r();
      if (mode === 'pool') p.write('x');
      else { fs.writeSync(p._fd, 'x'); if (mode === 'spin') { const got = spinRead(+process.argv[3] || 100); if (got) return r(); } }
    });
    if (i >= 200) lat.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  lat.sort((a, b) => a - b); console.log(mode, process.argv[3]||'', 'p50', lat[1000].toFixed(0), 'p90', lat[1800].toFixed(0), 'p99', lat[1980].toFixed(0)); p.kill(); process.exit(0);
}
