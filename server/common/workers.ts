import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

/**
 * Where a worker thread's compiled script is: beside the calling module when
 * running from dist/, else in dist/ (under ts-jest the sources run from
 * server/; `npm test` builds first). `dir` is the caller's `__dirname`
 * (server/<room> or dist/server/<room>), `file` the script's name. Null if
 * it is in neither place (the build has not run).
 */
export function compiledWorkerPath(dir: string, file: string): string | null {
  const beside = join(dir, file);
  if (existsSync(beside)) return beside;
  const built = resolve(dir, '../../dist/server', basename(dir), file);
  return existsSync(built) ? built : null;
}
