// Usage: [MODE=js|native|native-nocb|native-read|native-both] [WRITE=direct|pool] node bench/experiments/lean-relay.js <program> [args...]
// A PTY -> WebSocket relay as lean as Node allows, printing {"port":N}: output in binary frames (MODE=js: node-pty's
// stream and ws.send; native: native-out.c writes the frame, then JS gets the bytes; native-nocb: JS never sees them; native-read:
// native-out.c only reads, JS sends with ws.send),
// input written to the master directly (WRITE=direct, what agentd does) or through node-pty's thread pool (pool,
// what bench/core.ts's minimal relay does). For echo-servers.js; one connection at a time, no flow control.
const { WebSocketServer } = require('ws');
const pty = require('node-pty');
const fs = require('fs');
const http = require('http');
const MODE = process.env.MODE || 'js';
const WRITE = process.env.WRITE || 'direct';
const native = MODE.startsWith('native') ? require(process.env.NATIVE_OUT || '/tmp/native-out.node') : null;
const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const [command, ...args] = process.argv.slice(2);
let seen = 0;
wss.on('connection', (ws) => {
  const p = pty.spawn(command, args, { name: 'xterm-256color', cols: 120, rows: 40, encoding: null });
  if (!native) p.onData((d) => ws.send(d, { binary: true }));
  else {
    p._socket.pause();
    if (MODE === 'native-read') native.start(p._fd, -1, (b) => ws.send(b, { binary: true }));
    else native.start(p._fd, ws._socket._handle.fd, MODE === 'native' || MODE === 'native-both' ? (b) => (seen += b.length) : undefined);
  }
  if (MODE === 'native-both') {
    // The socket's reads leave Node: native-out.c's startIn parses the frames and writes the PTY.
    ws._socket.pause();
    ws._socket._handle.readStop();
    native.startIn(ws._socket._handle.fd, p._fd);
  } else ws.on('message', (d) => (WRITE === 'direct' ? fs.writeSync(p._fd, d) : p.write(d)));
  ws.on('close', () => p.kill('SIGKILL'));
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
