// Both store drivers for plugin tests that keep state in the store (greylist, rate-limit): the
// embedded one in a temp dir, and Redis at REDIS_URL (default redis://127.0.0.1:6379) under a
// key prefix of its own, whose keys are deleted again by close().
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEmbeddedStore } from '../../src/store/embedded.js';
import { createRedisStore, FORMAT_KEY } from '../../src/store/redis.js';
import type { Store } from '../../src/store/store.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestStore {
  store: Store;
  close(): Promise<void>;
}

export const STORE_DRIVERS: { name: 'embedded' | 'redis'; open(): Promise<TestStore> }[] = [
  {
    name: 'embedded',
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'postern-store-'));
      const store = createEmbeddedStore(dir);
      return {
        store,
        async close() {
          await store.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'redis',
    async open() {
      const store = createRedisStore({ url: REDIS_URL, prefix: `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:` });
      return {
        store,
        async close() {
          // keys() leaves out the driver's format key; it goes too.
          await store.del(...(await store.keys('')), FORMAT_KEY);
          await store.close();
        },
      };
    },
  },
];
