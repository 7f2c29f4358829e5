// Config keys owned by the state store: `store`.
//   store: { driver: embedded }                      (the default) files under data_dir/state/
//   store: { driver: redis, url, prefix, … }         one Redis shared by every node
import { z } from 'zod';
import { duration } from '../config/units.js';

export const storeSchema = z.discriminatedUnion('driver', [
  z.object({ driver: z.literal('embedded') }).strict(),
  z
    .object({
      driver: z.literal('redis'),
      url: z.string().default('redis://127.0.0.1:6379/0'),
      /** Put before every key and channel, so several deployments can share one Redis. */
      prefix: z.string().default('postern:'),
      /** A command without an answer after this long fails as "store unavailable". Default 2s. */
      command_timeout: duration().optional(),
      /**
       * Keys whose last known values are kept in memory and served while Redis is unreachable
       * (see src/store/last-known.ts). An entry ending in ':' is a prefix, any other an exact key.
       * Default: the directory, relay policy, admin and user Sieve rules, API tokens.
       */
      last_known: z.array(z.string().min(1)).optional(),
    })
    .strict(),
]);

export type StoreConfig = z.infer<typeof storeSchema>;
