import type { Logger } from '../common/log';
import { SqliteStore } from './SqliteStore';

/** The settings the store takes from the daemon's config (a structural slice: store does not import config). */
export interface StoreConfig {
  dataDir: string;
  maxSessionHistoryMB: number;
}

/**
 * Opens the daemon's SQLite store on `config.dataDir`: takes the directory's
 * lock (throws if another agentd holds it) and reports loudly when a damaged
 * database had to be moved aside.
 */
export function openStore(config: StoreConfig, logger: Logger): SqliteStore {
  const log = logger.child({ component: 'store' });
  const store = SqliteStore.open({
    dataDir: config.dataDir,
    maxHistoryBytes: Math.round(config.maxSessionHistoryMB * 1024 * 1024),
    log,
  });
  log.info({ file: store.file }, 'store opened');
  return store;
}
