// Opens the Store the config asks for (`store.driver`), for the daemon and for CLI commands that
// share its state (`postern user …`). The embedded driver persists under `<data_dir>/state/` and
// may be opened by several processes at once; the Redis driver is not part of this build yet.
// Config keys read: `store`, `data_dir`.
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { createEmbeddedStore } from './embedded.js';
import type { Store } from './store.js';

export function openStore(config: Pick<Config, 'store' | 'data_dir'>, opts: { log?: Logger } = {}): Store {
  if (config.store.driver === 'redis') {
    throw new Error('store.driver redis is not available in this build; use { driver: embedded }');
  }
  return createEmbeddedStore(config.data_dir, opts.log ? { log: opts.log.child({ mod: 'store' }) } : {});
}
