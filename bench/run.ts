/**
 * Runs every bench (core, persist, health) one after the other and prints a
 * summary; a bench that is missing or throws is reported and skipped.
 *
 *   npm run bench                      (builds, then all)
 *   node dist/bench/run.js core health (some)
 *
 * The full results are also written as JSON to os.tmpdir(); the path is printed.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fmt, machineNotes, round, Spread } from './lib';

const BENCHES = ['core', 'persist', 'health'] as const;

type BenchModule = { run?: () => Promise<unknown> };

/** Loads dist/bench/<name>.js if it was built; null when it does not exist. */
function load(name: string): BenchModule | null {
  try {
    return require(join(__dirname, name)) as BenchModule; // eslint-disable-line @typescript-eslint/no-var-requires
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'MODULE_NOT_FOUND' && e.message.includes(join(__dirname, name))) return null;
    throw err;
  }
}

/** A table cell: a {median,min,max} as "m [min..max]", other objects as compact JSON. */
function cell(v: unknown): unknown {
  if (!v || typeof v !== 'object') return v;
  const s = v as { median?: unknown; min?: unknown; max?: unknown };
  if (typeof s.median === 'number' && typeof s.min === 'number' && typeof s.max === 'number') return fmt(s as Spread);
  return JSON.stringify(v);
}

function table(rows: unknown[]): void {
  console.table(rows.map((r) => (r && typeof r === 'object' ? Object.fromEntries(Object.entries(r).map(([k, v]) => [k, cell(v)])) : r)));
}

/** A bench's own summary rows if it gives some (`summary: [...]`), else its result as is. */
function printResult(name: string, result: unknown): void {
  console.log(`\n== ${name} ==`);
  const rows = (result as { summary?: unknown })?.summary;
  if (Array.isArray(rows) && rows.length) table(rows);
  else if (Array.isArray(result)) table(result);
  else console.log(JSON.stringify(result, null, 2));
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const names = wanted.length ? wanted : [...BENCHES];
  const results: Record<string, unknown> = { machine: machineNotes() };
  const status: Array<{ bench: string; status: string; seconds: number | string }> = [];
  for (const name of names) {
    const t0 = performance.now();
    let mod: BenchModule | null;
    try {
      mod = load(name);
    } catch (err) {
      status.push({ bench: name, status: `skipped: could not load (${(err as Error).message.split('\n')[0]})`, seconds: '-' });
      continue;
    }
    if (!mod || typeof mod.run !== 'function') {
      status.push({ bench: name, status: mod ? 'skipped: exports no run()' : `skipped: bench/${name}.ts does not exist yet`, seconds: '-' });
      continue;
    }
    console.error(`\n-- bench ${name} --`);
    try {
      const result = await mod.run();
      results[name] = result;
      printResult(name, result);
      status.push({ bench: name, status: 'ok', seconds: round((performance.now() - t0) / 1000, 1) });
    } catch (err) {
      console.error(err);
      status.push({ bench: name, status: `failed: ${(err as Error).message.split('\n')[0]}`, seconds: round((performance.now() - t0) / 1000, 1) });
    }
  }
  const file = join(os.tmpdir(), `agentd-bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log('\n== benches ==');
  console.table(status);
  console.log(`full results: ${file}`);
  if (status.some((s) => s.status.startsWith('failed'))) process.exitCode = 1;
  // A bench that left a timer or a socket behind must not hang `npm run bench`: say so and leave.
  setTimeout(() => {
    console.error('a bench left handles open (timers, sockets or children): exiting anyway');
    process.exit();
  }, 5_000).unref();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
