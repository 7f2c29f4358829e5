// Opens the Store the config asks for (`store.driver`), for the daemon and for CLI commands that
// share its state (`postern user …`). The embedded driver persists under `<data_dir>/state/` and
// may be opened by several processes at once; the Redis driver (redis.ts) connects in the
// background: the call returns at once, and the first commands wait for the first connection.
// Config keys read: `store`, `data_dir`.
import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { createEmbeddedStore } from './embedded.js';
import { createRedisStore } from './redis.js';
import type { Store } from './store.js';

export function openStore(config: Pick<Config, 'store' | 'data_dir'>, opts: { log?: Logger } = {}): Store {
  const log = opts.log?.child({ mod: 'store' });
  const s = config.store;
  if (s.driver === 'redis') {
    return createRedisStore({
      url: s.url,
      prefix: s.prefix,
      ...(s.command_timeout !== undefined ? { commandTimeoutMs: s.command_timeout } : {}),
      ...(s.last_known !== undefined ? { lastKnown: s.last_known } : {}),
      ...(log ? { log } : {}),
    });
  }
  return createEmbeddedStore(config.data_dir, log ? { log } : {});
}
