import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { canReleaseMemory, releaseMemoryNow } from '../../../server/common/memory';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Resident memory of this process, from /proc (what the OS counts). */
function rss(): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
}

const MB = 1024 * 1024;

describe('returning freed memory to the OS', () => {
  it('has its native helper built (npm install builds native/helper.c)', () => {
    expect(canReleaseMemory()).toBe(true);
  });

  it('hands back memory that the allocator keeps between live allocations', async () => {
    // 64 KiB blocks (like the rings' blocks) with a small live allocation after each one: once the
    // blocks are freed the allocator cannot give them back by itself, only a trim can.
    let blocks: Buffer[] = [];
    const pins: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      blocks.push(Buffer.allocUnsafeSlow(64 * 1024).fill(i & 0xff));
      pins.push(Buffer.allocUnsafeSlow(256).fill(1));
    }
    const held = process.memoryUsage().arrayBuffers;
    blocks = [];
    gc();
    // V8 frees buffers' memory on a background thread after a collection (slower on a busy machine): wait until it has.
    const deadline = Date.now() + 20_000;
    while (process.memoryUsage().arrayBuffers > held - 150 * MB && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      gc();
    }
    expect(held - process.memoryUsage().arrayBuffers).toBeGreaterThan(150 * MB);
    const before = rss();
    expect(releaseMemoryNow()).toBe(true);
    const after = rss();
    // ~187 MB were freed to the allocator; without the trim glibc keeps all of it (0 back).
    expect(before - after).toBeGreaterThan(100 * MB);
    expect(pins.every((p) => p[0] === 1)).toBe(true);
  });
});
