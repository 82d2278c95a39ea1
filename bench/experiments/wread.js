// Usage: node bench/experiments/wread.js <ms of event-loop work per MB> main|worker — reading a flood on the event loop vs a worker thread (no dup: an experiment, not agentd's code).
const FILE = process.env.FILE || require('node:path').join(require('node:os').tmpdir(), 'agentd-bench-b64-52428800.txt'); // made by bench/core.js
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
if (!isMainThread) {
  const tty = require('tty');
  const s = new tty.ReadStream(workerData.fd);
  let pending = []; let pendingBytes = 0; let inFlight = false;
  const post = () => { const b = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes); pending = []; pendingBytes = 0; inFlight = true;
    const ab = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer : b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    parentPort.postMessage(ab, [ab]); };
  s.on('data', (d) => { pending.push(d); pendingBytes += d.length; if (!inFlight) post(); });
  s.on('error', (e) => { console.error('werr', e.code); }); s.on('close', () => { if (pendingBytes) post(); parentPort.postMessage('end'); });
  parentPort.on('message', () => { inFlight = false; if (pendingBytes) post(); });
  return;
}
const pty = require('node-pty');
const msPerMB = Number(process.argv[2] || 0);
const mode = process.argv[3] || 'worker';
function spin(us) { const e = process.hrtime.bigint() + BigInt(Math.round(us * 1000)); while (process.hrtime.bigint() < e); }
function run() { return new Promise((res) => {
  const p = pty.spawn('cat', [FILE], { cols: 120, rows: 40, encoding: null });
  let n = 0, bytes = 0, tLast = 0n; const t0 = process.hrtime.bigint();
  const handle = (d) => { n++; bytes += d.byteLength; tLast = process.hrtime.bigint(); if (msPerMB) spin(d.byteLength / 1e6 * msPerMB * 1000); };
  let done = () => { const ms = Number(tLast - t0) / 1e6; res({ MB: +(bytes/1e6).toFixed(1), n, avgKB: +(bytes / n / 1024).toFixed(1), mbps: +(bytes / 1e6 / (ms / 1000)).toFixed(1) }); };
  if (mode === 'worker') {
    p.pause();
    const w = new Worker(__filename, { workerData: { fd: p._fd } });
    w.on('message', (m) => { if (m === 'end') return; handle(m); w.postMessage(1); });
    p.onExit(() => setTimeout(() => { w.terminate(); done(); }, 400));
  } else {
    p.onData(handle); p.onExit(() => setTimeout(done, 250));
  }
}); }
(async () => { const r = []; for (let i = 0; i < 3; i++) r.push(await run()); console.log(mode, msPerMB, JSON.stringify(r)); process.exit(0); })();
