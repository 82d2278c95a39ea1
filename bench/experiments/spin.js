// Usage: node bench/experiments/spin.js <us per chunk> — a bare node-pty reader of a flood that spends a fixed time per chunk.
const pty = require('node-pty');
const FILE = process.env.FILE || require('node:path').join(require('node:os').tmpdir(), 'agentd-bench-b64-52428800.txt'); // made by bench/core.js
const spinUs = Number(process.argv[2]||0);
function run(){return new Promise(res=>{
const p = pty.spawn('cat', [FILE], { cols: 120, rows: 40, encoding: null });
let n = 0, bytes = 0;
const t0 = process.hrtime.bigint(); const c0=process.cpuUsage();
p.onData((d) => { n++; bytes += d.length; if(spinUs){const e=process.hrtime.bigint()+BigInt(spinUs*1000); while(process.hrtime.bigint()<e);} });
p.onExit(() => { setTimeout(()=>{const ms = Number(process.hrtime.bigint() - t0) / 1e6; res({ n, avgKB: +(bytes / n/1024).toFixed(1), mbps: +(bytes / 1e6 / (ms / 1000)).toFixed(1)});},300); });
});}
(async()=>{const r=[];for(let i=0;i<3;i++)r.push(await run());console.log('spin',spinUs,JSON.stringify(r));})();
