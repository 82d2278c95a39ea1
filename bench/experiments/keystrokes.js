// The timed keystroke loop of the echo experiments (as bench/core.ts): one key at a time, the next once its echo is
// back; `ready` first (the echo program prints R when it is set up). Returns the timed round trips in microseconds.
const lib = require('../../dist/bench/lib.js');

/**
 * `hooks.start()` runs as the timed keystrokes begin (after `warmup`), `hooks.end(out)` after the last.
 * @param {(key: Buffer) => void} send
 * @param {(cb: (data: Buffer) => void) => void} onData
 */
async function keystrokes(send, onData, readyAlready, { n, warmup, start, end } = {}) {
  let waiting = null, ready = readyAlready;
  onData((d) => {
    if (!ready) return void (ready = d.includes(82));
    if (waiting && d.includes(waiting.b)) { const w = waiting; waiting = null; w.r(); }
  });
  while (!ready) await lib.sleep(5);
  const out = [];
  for (let i = 0; i < n + warmup; i++) {
    if (i === warmup) start?.();
    const b = 97 + (i % 26), t0 = performance.now();
    await new Promise((r) => { waiting = { b, r }; send(Buffer.from([b])); });
    if (i >= warmup) out.push((performance.now() - t0) * 1000);
  }
  end?.(out);
  return out;
}

module.exports = { keystrokes };
