import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The package's version, found from the source tree or from dist/. */
function readVersion(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')).version as string;
    dir = dirname(dir);
  }
  return '0.0.0';
}

export const VERSION = readVersion();
