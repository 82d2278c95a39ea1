import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { NativeHelper, nativeHelper } from './native';

/**
 * Returning freed memory to the operating system.
 *
 * A burst of output — a hundred sessions printing a megabyte each — leaves
 * hundreds of megabytes that the program has freed but glibc's allocator
 * keeps, scattered between live allocations where it never trims by itself:
 * measured (bench/core.ts memory) 390 MB of RSS, 170 MB after one
 * `malloc_trim(0)`. Node cannot call it, so native/helper.c does (built at
 * install; optional: without it nothing else changes).
 *
 * `releaseMemorySoon()` is called where much memory was just let go (a
 * session's ring dropped, a session forgotten): a second later one garbage
 * collection (buffers are only freed once collected) and one trim follow, at
 * most every few seconds however many ask. Together ~5–20 ms.
 */

const TRIM_DELAY_MS = 1_000;
const MIN_TRIM_INTERVAL_MS = 5_000;
const SWEEP_WAIT_MS = 200;

/** The helper if it can trim here (glibc), else null. */
function load(): NativeHelper | null {
  const helper = nativeHelper();
  return helper?.supported() ? helper : null;
}

/** True if this process can hand freed memory back (glibc, and the helper was built). */
export function canReleaseMemory(): boolean {
  return load() !== null;
}

/** Hands freed heap memory back to the OS now; false if nothing could be (or no helper). */
export function releaseMemoryNow(): boolean {
  const helper = load();
  if (!helper) return false;
  lastTrim = performance.now();
  return helper.trim();
}

/**
 * A full garbage collection on demand, in the calling thread's isolate (the
 * daemon does not run with --expose-gc, and workers cannot take it); null if
 * V8 refuses.
 */
export const collectGarbage: (() => void) | null = (() => {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
})();

let timer: NodeJS.Timeout | null = null;
let lastTrim = -Infinity;

/** Much memory was just freed: trim about a second from now (once, however many ask). */
export function releaseMemorySoon(): void {
  if (timer || !load()) return;
  const wait = Math.max(TRIM_DELAY_MS, lastTrim + MIN_TRIM_INTERVAL_MS - performance.now());
  timer = setTimeout(() => {
    collectGarbage?.();
    // V8 frees the buffers' memory on a background thread after the collection: trim once it has.
    timer = setTimeout(() => {
      timer = null;
      releaseMemoryNow();
    }, SWEEP_WAIT_MS);
    timer.unref();
  }, wait);
  timer.unref();
}
