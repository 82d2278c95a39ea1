import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { nativeHelper } from '../../../server/common/native';
import { tmpdir } from '../../helpers/tmp';

/**
 * The native readers' lifetime (native/helper.c, out* and in*), on a FIFO in a
 * child process each: closed from inside its own callback, from an
 * 'uncaughtException' handler after its callback threw, used after close, and
 * left open in a worker that ends or is terminated. Each used to crash (a
 * double release, a read of freed memory, libuv's loop closed with our handle
 * open); now each child exits 0.
 */

const HELPER = join(__dirname, '../../../native/build/Release/agentd_native.node');

/** Runs `body` in a fresh node with `h` (the helper), `fs`, and `fd`: a FIFO opened read-write, non-blocking. */
function run(body: string): { status: number | null; out: string } {
  const fifo = join(tmpdir('fifo'), 'f');
  const script = `
    const h = require(${JSON.stringify(HELPER)});
    const fs = require('fs');
    require('child_process').execFileSync('mkfifo', [${JSON.stringify(fifo)}]);
    const fd = fs.openSync(${JSON.stringify(fifo)}, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const FIFO = ${JSON.stringify(fifo)};
    ${body}
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('the native output reader (native/helper.c)', () => {
  it('is built', () => {
    expect(typeof nativeHelper()?.outOpen).toBe('function');
  });

  it('can be closed from inside its own callback, and refuses calls after close', () => {
    const r = run(`
      const reader = h.outOpen(h.dup(fd), new Int32Array(8), () => { h.outClose(reader); h.outClose(reader); console.log('closed inside'); });
      h.outStart(reader);
      fs.writeSync(fd, 'hello');
      setTimeout(() => {
        try { h.outArm(reader, 0, 1); console.log('armed after close'); } catch (e) { console.log('refused: ' + e.code); }
        global.gc?.();
        fs.closeSync(fd);
      }, 200);
    `);
    expect(r.out).toContain('closed inside');
    expect(r.out).toContain('refused: ECLOSED');
    expect(r.status).toBe(0);
  });

  it("survives an 'uncaughtException' handler that closes the reader whose callback threw", () => {
    const r = run(`
      let reader;
      process.on('uncaughtException', (e) => { console.log('handler: ' + e.message); h.outClose(reader); });
      reader = h.outOpen(h.dup(fd), new Int32Array(8), () => { throw new Error('boom'); });
      h.outStart(reader);
      fs.writeSync(fd, 'hello');
      setTimeout(() => { console.log('survived'); fs.closeSync(fd); }, 200);
    `);
    expect(r.out).toContain('handler: boom');
    expect(r.out).toContain('survived');
    expect(r.status).toBe(0);
  });

  it.each(['polling', 'fed', 'stopped'])('lets a worker end with a reader left open (%s)', (mode) => {
    const r = run(`
      const { Worker } = require('worker_threads');
      const w = new Worker(\`
        const h = require(${JSON.stringify(HELPER)});
        const fs = require('fs');
        const { parentPort } = require('worker_threads');
        const fd = fs.openSync(\${JSON.stringify(FIFO)}, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
        globalThis.reader = h.outOpen(h.dup(fd), new Int32Array(8), () => undefined);
        if ('${mode}' !== 'stopped') h.outStart(globalThis.reader);
        if ('${mode}' === 'fed') setInterval(() => fs.writeSync(fd, 'x'.repeat(100)), 1);
        parentPort.postMessage('ready');
        if ('${mode}' === 'stopped') parentPort.unref();
      \`, { eval: true });
      w.on('message', () => { if ('${mode}' !== 'stopped') setTimeout(() => w.terminate(), 100); });
      w.on('exit', (code) => { console.log('worker exit ' + code); fs.closeSync(fd); });
    `);
    expect(r.out).toMatch(/worker exit \d+/);
    expect(r.status).toBe(0);
  });

  // The input reader (in*) shares the lifetime code; here it takes one frame from a real socket to the FIFO.
  it('input reader: takes a frame and stops at one not its own, can be closed from inside its callback, refuses calls after close and of the other kind', () => {
    const r = run(`
      const net = require('net');
      const srv = net.createServer((s) => {
        s._handle.readStop();
        const reader = h.inOpen(h.dup(s._handle.fd), (written, rest, stopped) => {
          console.log('cb ' + written + ' ' + stopped);
          h.inClose(reader);
          h.inClose(reader);
        });
        try { h.outStart(reader); } catch (e) { console.log('kind: ' + e.message); }
        h.inStart(reader, fd, new Int32Array(1));
        setTimeout(() => {
          const got = Buffer.alloc(16);
          console.log('terminal got ' + got.toString('latin1', 0, fs.readSync(fd, got)));
          try { h.inStart(reader, fd, new Int32Array(1)); console.log('started after close'); } catch (e) { console.log('refused: ' + e.code); }
          global.gc?.();
          s.destroy(); c.destroy(); srv.close(); fs.closeSync(fd);
        }, 200);
      });
      let c;
      srv.listen(0, '127.0.0.1', () => {
        // A masked binary frame (a zero mask) with the payload "a", taken; then a text frame, left: the reader stops and says so.
        c = net.connect(srv.address().port, '127.0.0.1', () => c.write(Buffer.from([0x82, 0x81, 0, 0, 0, 0, 0x61, 0x81, 0x81, 0, 0, 0, 0, 0x62])));
      });
    `);
    expect(r.out).toContain('kind: not an output reader');
    expect(r.out).toContain('cb 1 true');
    expect(r.out).toContain('terminal got a');
    expect(r.out).toContain('refused: ECLOSED');
    expect(r.status).toBe(0);
  });

  it('lets a worker end with an input reader left open and started', () => {
    const r = run(`
      const { Worker } = require('worker_threads');
      const w = new Worker(\`
        const h = require(${JSON.stringify(HELPER)});
        const net = require('net');
        const fs = require('fs');
        const { parentPort } = require('worker_threads');
        const fd = fs.openSync(\${JSON.stringify(FIFO)}, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
        const srv = net.createServer((s) => {
          s._handle.readStop();
          globalThis.reader = h.inOpen(h.dup(s._handle.fd), () => undefined);
          h.inStart(globalThis.reader, fd, new Int32Array(1));
          parentPort.postMessage('ready');
        }).listen(0, '127.0.0.1', () => { globalThis.c = net.connect(srv.address().port, '127.0.0.1'); });
      \`, { eval: true });
      w.on('message', () => setTimeout(() => w.terminate(), 100));
      w.on('exit', (code) => { console.log('worker exit ' + code); fs.closeSync(fd); });
    `);
    expect(r.out).toMatch(/worker exit \d+/);
    expect(r.status).toBe(0);
  });
});
