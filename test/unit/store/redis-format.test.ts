// The Redis store's format key (src/store/redis.ts, "Format"): `<prefix>store:format` is set to
// the build's format when absent and read on every connection and again while connected; any
// other value stops the node from using the store, as the embedded driver does with newer files.
// On a private redis-server (test/helpers/redis-server.ts), so the test can drop the store's
// connections without touching anyone else's.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { StoreFormatError, StoreUnavailableError } from '../../../src/store/errors.js';
import { storeHealth } from '../../../src/store/health.js';
import { createRedisStore, FORMAT_KEY, REDIS_FORMAT, type RedisStoreOptions } from '../../../src/store/redis.js';
import type { ChangeEvent } from '../../../src/store/store.js';
import { captureLogger } from '../queue/helpers.js';
import { startRedisServer, type RunningRedis } from '../../helpers/redis-server.js';
import { sleep, waitFor } from './contract.js';

let redis: RunningRedis;
let admin: Redis;
before(async () => {
  redis = await startRedisServer();
  admin = new Redis(redis.url);
});
after(async () => {
  await admin.quit();
  await redis.stop();
});

let n = 0;
const freshPrefix = () => `fmt${n++}:`;
const open = (prefix: string, opts: Partial<RedisStoreOptions> = {}) => createRedisStore({ url: redis.url, prefix, commandTimeoutMs: 1000, ...opts });

/** Every key under `prefix` with its type and value, as Redis holds them. */
async function dump(prefix: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const k of (await admin.keys(`${prefix}*`)).sort()) {
    const type = await admin.type(k);
    out[k] = type === 'string' ? await admin.get(k) : type === 'hash' ? await admin.hgetall(k) : type;
  }
  return out;
}

const isNewer = (shown: string) => (e: unknown) =>
  e instanceof StoreFormatError && e instanceof StoreUnavailableError && e.code === 451 && e.enhanced === '4.3.0' && e.message.includes(`is in store format ${shown}, written by a newer Postern`);

describe('redis store: format key', () => {
  it('a new deployment gets the format on its first command; keys() leaves it out; a node finding it carries on', async () => {
    const prefix = freshPrefix();
    const a = open(prefix);
    try {
      await a.ready();
      assert.equal(await admin.get(`${prefix}${FORMAT_KEY}`), String(REDIS_FORMAT));
      await a.set('dir:user:a@example.test', '{}');
      assert.deepEqual(await a.keys(''), ['dir:user:a@example.test']);
      assert.equal(storeHealth(a).healthy, true);
    } finally {
      await a.close();
    }
    const b = open(prefix);
    try {
      await b.ready();
      assert.equal(await b.get('dir:user:a@example.test'), '{}');
      await waitFor(() => storeHealth(b).healthy, 'the second node to turn healthy');
      assert.equal(await admin.get(`${prefix}${FORMAT_KEY}`), '1');
    } finally {
      await b.close();
    }
  });

  const foreign: [string, (key: string) => Promise<unknown>, string][] = [
    ['2', (k) => admin.set(k, '2'), '2'],
    ['"two"', (k) => admin.set(k, 'two'), '"two"'],
    ['"1.0"', (k) => admin.set(k, '1.0'), '"1.0"'],
    ['an empty string', (k) => admin.set(k, ''), '""'],
    ['a hash', (k) => admin.hset(k, 'v', '2'), '"(not a string)"'],
  ];
  for (const [what, write, shown] of foreign) {
    it(`a format of ${what} is refused at open: ready() rejects, every call fails, nothing is written`, async () => {
      const prefix = freshPrefix();
      await write(`${prefix}${FORMAT_KEY}`);
      await admin.set(`${prefix}dir:user:a@example.test`, '{"new":"layout"}');
      await admin.hset(`${prefix}policy:relay:networks`, 'n1', '192.0.2.0/24');
      const before = await dump(prefix);
      const cap = captureLogger();
      const s = open(prefix, { log: cap.log });
      try {
        await assert.rejects(s.ready(), isNewer(shown));
        await assert.rejects(s.get('dir:user:a@example.test'), isNewer(shown));
        await assert.rejects(s.hgetall('policy:relay:networks'), isNewer(shown));
        await assert.rejects(s.set('dir:user:b@example.test', '{}'), isNewer(shown));
        await assert.rejects(s.incr('greylist:x'), isNewer(shown));
        await assert.rejects(s.keys('dir:'), isNewer(shown));
        await assert.rejects(s.publish('directory', 'x'), isNewer(shown));
        assert.throws(() => s.subscribe('directory', () => undefined), isNewer(shown));
        const h = storeHealth(s);
        assert.equal(h.healthy, false);
        assert.match(h.error ?? '', /written by a newer Postern/);
        assert.deepEqual(await dump(prefix), before);
        assert.equal(cap.lines.filter((l) => l.evt === 'store.format_newer').length, 1);
      } finally {
        await s.close();
      }
    });
  }

  it('a running node meets a raised format: logged once, subscribers resync, unhealthy, last known values no longer served', async () => {
    const prefix = freshPrefix();
    const cap = captureLogger();
    const s = open(prefix, { log: cap.log, formatRecheckMs: 50 });
    try {
      await s.set('dir:user:a@example.test', '{}');
      await s.refreshLastKnown();
      const events: ChangeEvent[] = [];
      s.subscribe('directory', (ev) => events.push(ev));
      await s.publish('directory', 'before');
      await waitFor(() => events.length === 1, 'the first event');
      assert.equal(storeHealth(s).healthy, true);

      await admin.set(`${prefix}${FORMAT_KEY}`, '2');
      await waitFor(() => !storeHealth(s).healthy, 'health to turn false');
      assert.match(storeHealth(s).error ?? '', /store format 2/);
      await waitFor(() => events.some((e) => e.message === '{"resync":true}'), 'a resync for the subscriber');
      await assert.rejects(s.get('dir:user:a@example.test'), isNewer('2'));
      await assert.rejects(s.set('dir:user:b@example.test', '{}'), isNewer('2'));
      // Another node's events are not delivered any more.
      await admin.publish(`${prefix}directory`, 'after');
      await sleep(200); // four rechecks
      assert.deepEqual(events.map((e) => e.message), ['before', '{"resync":true}']);
      assert.equal(cap.lines.filter((l) => l.evt === 'store.format_newer').length, 1);
      assert.equal(await admin.get(`${prefix}dir:user:b@example.test`), null);
    } finally {
      await s.close();
    }
  });

  it('the format is read again on a new connection, before the node sends anything else', async () => {
    const prefix = freshPrefix();
    const s = open(prefix, { formatRecheckMs: 3_600_000 });
    try {
      await s.set('k', 'v');
      assert.equal(storeHealth(s).healthy, true);
      // A newer node raises the format; this node's connection drops and comes back.
      await admin.set(`${prefix}${FORMAT_KEY}`, '2');
      await admin.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      await waitFor(() => storeHealth(s).error?.includes('store format 2') === true, 'the reconnect to find the new format');
      await assert.rejects(s.set('k', 'old'), isNewer('2'));
      assert.equal(await admin.get(`${prefix}k`), 'v');
    } finally {
      await s.close();
    }
  });

  it('an error reply other than WRONGTYPE (here NOPERM: a user without EVAL) is a temporary failure, not a newer format', async () => {
    const prefix = freshPrefix();
    const user = `noeval${n}`;
    await admin.call('ACL', 'SETUSER', user, 'on', 'nopass', '~*', '&*', '+@all', '-eval', '-evalsha');
    const s = open(prefix, { url: redis.url.replace('redis://', `redis://${user}@`) });
    try {
      await s.ready(); // reachable, and nothing says the data is in another format
      await assert.rejects(s.get('k'), (e: unknown) => e instanceof StoreUnavailableError && !(e instanceof StoreFormatError) && /NOPERM/.test(e.message));
      assert.doesNotMatch(storeHealth(s).error ?? '', /newer Postern/);
      await admin.call('ACL', 'SETUSER', user, '+eval', '+evalsha');
      await s.set('k', 'v');
      assert.equal(await s.get('k'), 'v');
      await waitFor(() => storeHealth(s).healthy, 'health once the format could be read');
    } finally {
      await s.close();
      await admin.call('ACL', 'DELUSER', user);
    }
  });

  it('with Redis down at start, ready() resolves (an outage); once Redis answers the node sets the format and works', async () => {
    const prefix = freshPrefix();
    await redis.kill();
    const s = open(prefix);
    try {
      await s.ready();
      await assert.rejects(s.get('k'), (e: unknown) => e instanceof StoreUnavailableError && !(e instanceof StoreFormatError));
      await redis.start();
      await waitFor(() => storeHealth(s).healthy, 'the store to connect');
      await s.set('k', 'v');
      assert.equal(await admin.get(`${prefix}${FORMAT_KEY}`), '1');
    } finally {
      await s.close();
      await redis.start();
    }
  });
});
