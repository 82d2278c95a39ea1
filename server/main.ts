import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { writeFileAtomic } from './common/files';
import { isLoopbackHost } from './common/net';
import { createLogger } from './common/log';
import { canReleaseMemory } from './common/memory';
import { dropNpmScriptEnv } from './common/npmEnv';
import { ConfigError, loadConfig } from './config/load';
import { Config } from './config/schema';
import { createApp } from './http/app';
import { ensureToken } from './http/auth';
import { openStore } from './store/open';

/** How long a graceful stop may take before we exit anyway. */
const SHUTDOWN_DEADLINE_MS = 15_000;

export async function main(): Promise<void> {
  // Under `npm start`: agents are looked up, and sessions started, as from the user's own terminal.
  dropNpmScriptEnv();
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`agentd: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const token = ensureToken(config);
  const store = openStore(config, logger);
  // The data directory is ours now (openStore took its lock): a port file left by a crashed daemon goes before
  // anything else, so nobody reads it while this one restores (the CLI trusts it while the lock's holder lives).
  rmSync(join(config.dataDir, 'agentd.port'), { force: true });
  const app = createApp(config, { logger, store, token: token.token });
  await app.restore();

  await new Promise<void>((resolve, reject) => {
    app.server.once('error', reject);
    app.server.listen(config.port, config.host, () => resolve());
  });
  const { port } = app.server.address() as AddressInfo;
  // Written whole or not at all: scripts and tests read it the moment it exists.
  writeFileAtomic(join(config.dataDir, 'agentd.port'), `${port}\n`);
  const base = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  const tokenHint = token.file ? `$(cat ${token.file})` : '$API_TOKEN';
  logger.info(
    { url: base, dataDir: config.dataDir, tokenFrom: token.from, tokenFile: token.file, allowedRoots: config.allowedRoots },
    `agentd listening on ${base}; ` +
      (token.file ? `the API token is in ${token.file} (mode 0600)` : 'the API token is the API_TOKEN variable') +
      `; try: curl -H "Authorization: Bearer ${tokenHint}" ${base}/api/sessions`,
  );

  if (!isLoopbackHost(config.host)) {
    logger.warn({ host: config.host }, `listening on ${config.host}, not only on this machine: anyone who reaches this port and holds the token can run programs as this user; the traffic is plain HTTP, so put it behind TLS (e.g. a reverse proxy) or a VPN`);
  }
  if (!canReleaseMemory() && process.platform === 'linux') logger.warn('native helper not built (npm rebuild): memory freed after bursts of output stays with the daemon, and floods of output are read on the event loop (slower)');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'stopping: ending sessions, flushing the store');
    const deadline = setTimeout(() => {
      logger.error('shutdown deadline passed: exiting');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    app
      .dispose()
      .then(() => store.close())
      .then(() => {
        rmSync(join(config.dataDir, 'agentd.port'), { force: true });
        logger.info('stopped');
        process.exit(0);
      })
      .catch((err) => {
        logger.error({ err: (err as Error).message }, 'error while stopping');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // The terminal that started us closed: stop cleanly (flush, checkpoint) rather than die mid-write.
  process.on('SIGHUP', () => stop('SIGHUP'));
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`agentd: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
