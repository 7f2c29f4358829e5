// The Redis store (src/store/redis.ts) against the shared Store contract, on the Redis at
// REDIS_URL (default redis://127.0.0.1:6379), each store under its own key prefix; then what is
// Redis-specific: the deployment prefix, and what a reader in another process (another node)
// sees. Every key this file made is deleted at the end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createRedisStore, reconnectDelay, type RedisStoreOptions } from '../../../src/store/redis.js';
import type { ChangeEvent } from '../../../src/store/store.js';
import { storeHealth } from '../../../src/store/health.js';
import { runStoreContract, sleep, waitFor } from './contract.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:`;
let n = 0;
const freshPrefix = () => `${RUN}${n++}:`;
const open = (opts: Partial<RedisStoreOptions> = {}) => createRedisStore({ url: REDIS_URL, prefix: freshPrefix(), ...opts });

const admin = new Redis(REDIS_URL, { lazyConnect: true });
after(async () => {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${RUN}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await admin.del(...keys);
  } while (cursor !== '0');
  await admin.quit();
});

runStoreContract('redis', () => open());

describe('redis store: deployment prefix', () => {
  it('keys and channels live under the prefix; two prefixes on one server do not see each other', async () => {
    const prefix = freshPrefix();
    const a = createRedisStore({ url: REDIS_URL, prefix });
    const b = open();
    try {
      await a.set('user:x', '1');
      await a.hset('h', 'f', 'v');
      assert.equal(await admin.get(`${prefix}user:x`), '1');
      assert.equal(await admin.hget(`${prefix}h`, 'f'), 'v');
      assert.equal(await b.get('user:x'), null);
      assert.deepEqual(await b.keys(''), []);
      const gotB: ChangeEvent[] = [];
      b.subscribe('directory', (ev) => gotB.push(ev));
      const gotA: ChangeEvent[] = [];
      a.subscribe('directory', (ev) => gotA.push(ev));
      await a.publish('directory', 'x');
      await waitFor(() => gotA.length === 1, 'the event on its own prefix');
      await sleep(30);
      assert.equal(gotB.length, 0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a prefix with glob characters is matched literally by keys()', async () => {
    const prefix = `${RUN}g[*]?${n++}:`;
    const s = createRedisStore({ url: REDIS_URL, prefix });
    const other = createRedisStore({ url: REDIS_URL, prefix: `${RUN}gX${n++}:` });
    try {
      await s.set('a*b', '1');
      await other.set('a*b', '2');
      assert.deepEqual(await s.keys(''), ['a*b']);
      assert.deepEqual(await s.keys('a*'), ['a*b']);
      assert.deepEqual(await s.keys('a?'), []);
    } finally {
      await s.close();
      await other.close();
    }
  });
});

describe('redis store: two nodes', () => {
  it('a write and an event from one node reach the other', async () => {
    const prefix = freshPrefix();
    const a = createRedisStore({ url: REDIS_URL, prefix });
    const b = createRedisStore({ url: REDIS_URL, prefix });
    try {
      const got: string[] = [];
      b.subscribe('rules', (ev) => got.push(ev.message));
      await b.get('warm-up'); // b connected and subscribed before a publishes
      await waitFor(() => storeHealth(b).healthy, 'b healthy');
      await a.hset('sieve:rules', 'r1', 'keep;');
      await a.publish('rules', '{"op":"put"}');
      await waitFor(() => got.length === 1, 'the event at b');
      assert.equal(await b.hget('sieve:rules', 'r1'), 'keep;');
      assert.equal(await b.incr('shared'), 1);
      assert.equal(await a.incr('shared'), 2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('WRONGTYPE and bad INCR come back as Redis errors, not as "store unavailable"', async () => {
    const s = open();
    try {
      await s.set('str', 'abc');
      await assert.rejects(s.incr('str'), (e: Error) => e.name === 'ReplyError' && /not an integer/.test(e.message));
      await assert.rejects(s.hget('str', 'f'), (e: Error) => e.name === 'ReplyError' && /WRONGTYPE/.test(e.message));
      assert.equal(storeHealth(s).healthy, true);
    } finally {
      await s.close();
    }
  });
});

describe('redis store: reconnect backoff', () => {
  it('doubles from 100 ms up to 2 s, with at most 10 % jitter', () => {
    const none = () => 0;
    assert.deepEqual([1, 2, 3, 4, 5, 6, 50].map((i) => reconnectDelay(i, none)), [100, 200, 400, 800, 1600, 2000, 2000]);
    assert.equal(reconnectDelay(1, () => 0.999), 110);
    assert.equal(reconnectDelay(10, () => 0.999), 2200);
  });
});
