#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { ConfigError, loadConfig } from '../config/load';
import { Config } from '../config/schema';
import { VERSION } from '../common/version';
import { canReleaseMemory } from '../common/memory';
import { dropNpmScriptEnv } from '../common/npmEnv';
import { AgentRegistry } from '../agents/profiles';
import { probeAgents } from '../agents/status';
import { liveLockHolder, LOCK_FILE } from '../store/lock';
import { nativeHelper } from '../common/native';
import { nativeOutputWanted } from '../pty/FastOutput';
import { nativeInputWanted } from '../pty/FastInput';

/** `agentd start | sessions | token | doctor`: the daemon and a few operator helpers. */
function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`agentd: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/**
 * The port of the daemon running on `dataDir`. The port file is trusted only
 * while the daemon that holds the data directory's lock is alive: one left by
 * a crash may name a port that another program listens on now, and the token
 * must not go there.
 */
function daemonPort(dataDir: string): number {
  const portFile = join(dataDir, 'agentd.port');
  if (!existsSync(portFile)) throw new Error(`no running daemon found (${portFile} is missing); start one with "agentd start"`);
  const holder = liveLockHolder(dataDir);
  if (!holder) throw new Error(`no running daemon found: ${portFile} was left by a daemon that is no longer running (no live process holds ${join(dataDir, LOCK_FILE)}); start one with "agentd start"`);
  const raw = readFileSync(portFile, 'utf8').trim();
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port < 1 || port > 65535) throw new Error(`${portFile} does not hold a port number (it holds ${JSON.stringify(raw.slice(0, 40))})`);
  return port;
}

async function listSessions(json: boolean): Promise<void> {
  const c = config();
  const port = daemonPort(c.dataDir);
  const token = c.apiToken ?? readFileSync(join(c.dataDir, 'token'), 'utf8').trim();
  const url = `http://127.0.0.1:${port}/api/sessions`;
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new Error(`the daemon (pid ${liveLockHolder(c.dataDir)?.pid ?? '?'}) does not answer on ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  let body: { sessions?: Array<Record<string, unknown>>; error?: { code: string; message: string } };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`what answers on ${url} is not agentd (HTTP ${res.status}, not JSON)`);
  }
  if (!res.ok || !Array.isArray(body.sessions)) {
    const why = body.error ? `${body.error.code}: ${body.error.message}` : 'no session list';
    const hint = res.status === 401 ? ' (is API_TOKEN the daemon\'s, or unset to use the token file?)' : '';
    throw new Error(`the daemon answered HTTP ${res.status}, ${why}${hint}`);
  }
  if (json) {
    process.stdout.write(JSON.stringify(body, null, 2) + '\n');
    return;
  }
  for (const s of body.sessions) {
    process.stdout.write(`${s.id}\t${s.agent}\t${s.state}\t${s.projectPath}\t${s.endReason ?? ''}\n`);
  }
}

async function doctor(): Promise<number> {
  dropNpmScriptEnv(); // report the agents the daemon would find
  let problems = 0;
  const check = (ok: boolean, what: string, hint = '') => {
    process.stdout.write(`${ok ? 'ok  ' : 'FAIL'}  ${what}${!ok && hint ? ` — ${hint}` : ''}\n`);
    if (!ok) problems++;
  };
  check(Number(process.versions.node.split('.')[0]) >= 20, `node ${process.versions.node}`, 'agentd needs Node 20 or newer');
  for (const mod of ['node-pty', 'better-sqlite3']) {
    try {
      require(mod);
      check(true, `${mod} native module loads`);
    } catch (err) {
      check(false, `${mod} native module loads`, `${(err as Error).message.split('\n')[0]}; rebuild with "npm rebuild ${mod}" (needs python3, make, g++)`);
    }
  }
  process.stdout.write(
    canReleaseMemory()
      ? `ok    native helper built (memory freed after bursts goes back to the OS; floods of output are read off the event loop; ${
          typeof nativeHelper()?.outOpen !== 'function'
            ? 'no native output path in this build: "npm rebuild" adds it'
            : nativeOutputWanted()
              ? 'output leaves for clients from the native reader'
              : 'the native output path is off (AGENTD_NATIVE_OUTPUT=off)'
        }; ${
          typeof nativeHelper()?.inOpen !== 'function'
            ? 'no native input path in this build: "npm rebuild" adds it'
            : nativeInputWanted()
              ? 'keystrokes go from the socket to the terminal natively'
              : 'the native input path is off (AGENTD_NATIVE_INPUT=off)'
        })\n`
      : 'info  native helper not built: agentd works, but keeps memory freed after bursts and reads floods of output on its event loop (~0.65x the throughput) — "npm rebuild" builds it (needs make, gcc)\n',
  );
  let configured: Config['agents'] = {};
  try {
    const c = loadConfig();
    configured = c.agents;
    check(true, `config valid (DATA_DIR ${c.dataDir}, roots ${c.allowedRoots.join(':')})`);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Still look for the built-in agents: the rest of the report helps fix the machine while the file is fixed.
    check(false, 'config valid', `${err.message.trimEnd()}\n      (the agents below are the built-in ones only)`);
  }
  const agents = await probeAgents(new AgentRegistry(configured), Object.keys({ shell: 1, claude: 1, codex: 1, ...configured }), true);
  for (const [name, s] of Object.entries(agents)) {
    process.stdout.write(`${s.available ? 'ok  ' : 'info'}  agent ${name}: ${s.available ? `${s.command}${s.version ? ` (${s.version})` : ''}` : s.message}\n`);
  }
  return problems;
}

const program = new Command();
program.name('agentd').description('Keeps coding agents alive in their own terminals, reachable over REST and WebSocket.').version(VERSION);
program
  .command('start', { isDefault: true })
  .description('run the daemon (configuration from the environment and CONFIG_FILE)')
  .action(async () => {
    const { main } = await import('../main');
    await main();
  });
program
  .command('sessions')
  .description('list the sessions of the running daemon')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => listSessions(!!opts.json));
program
  .command('token')
  .description('print where the API token is (never the token itself unless --show)')
  .option('--show', 'print the token')
  .action((opts: { show?: boolean }) => {
    const c = config();
    if (c.apiToken) {
      process.stdout.write(opts.show ? `${c.apiToken}\n` : 'the token is the API_TOKEN environment variable\n');
      return;
    }
    const file = join(c.dataDir, 'token');
    if (!existsSync(file)) throw new Error(`${file} does not exist yet: it is generated on the first "agentd start"`);
    process.stdout.write(opts.show ? readFileSync(file, 'utf8') : `${file}\n`);
  });
program
  .command('doctor')
  .description('check the toolchain, native modules, configuration and agents')
  .action(async () => {
    process.exitCode = (await doctor()) ? 1 : 0;
  });

program.parseAsync(process.argv).catch((err) => {
  process.stderr.write(`agentd: ${(err as Error).message}\n`);
  process.exit(1);
});
