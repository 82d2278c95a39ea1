import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** agentd's optional native helper (native/helper.c, built by `npm install`). */
export interface NativeHelper {
  /** glibc's malloc_trim(0): true if memory went back to the OS. */
  trim(): boolean;
  /** True where `trim` can do anything (glibc). */
  supported(): boolean;
  /** A close-on-exec duplicate of `fd` (throws with the errno's code). Missing from helpers built before it. */
  dup?(fd: number): number;
}

let helper: NativeHelper | null | undefined;

/** The helper, found beside the sources or the build (dist/), or null if it was not built. */
export function nativeHelper(): NativeHelper | null {
  if (helper !== undefined) return helper;
  helper = null;
  for (let dir = __dirname, i = 0; i < 5; i++, dir = resolve(dir, '..')) {
    const file = join(dir, 'native', 'build', 'Release', 'agentd_native.node');
    if (!existsSync(file)) continue;
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      helper = require(file) as NativeHelper;
    } catch {
      helper = null;
    }
    break;
  }
  return helper;
}
