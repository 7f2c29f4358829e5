// The Redis store when Redis goes away (src/store/redis.ts, last-known.ts): on a private
// redis-server (test/helpers/redis-server.ts) that the test kills, stops and starts again.
// While it is down: reads of covered keys (directory, relay policy, rules) answer with their last
// known values, everything else fails with StoreUnavailableError at once, health says so; when it
// returns: healthy again, subscribers get {"resync":true}, commands work.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { StoreUnavailableError } from '../../../src/store/errors.js';
import { storeHealth } from '../../../src/store/health.js';
import { createRedisStore, type RedisStore } from '../../../src/store/redis.js';
import type { ChangeEvent } from '../../../src/store/store.js';
import { startRedisServer, type RunningRedis } from '../../helpers/redis-server.js';
import { waitFor } from './contract.js';
import { testPlugin } from '../../../src/pipeline/harness.js';
import authPlugin from '../../../plugins/auth/index.js';
import relayAcl from '../../../plugins/relay-acl/index.js';

let redis: RunningRedis;
before(async () => {
  redis = await startRedisServer();
});
after(async () => {
  await redis.stop();
});
// A failed test may leave it down; every test starts with it up.
beforeEach(() => redis.start());

const unavailable = (e: unknown) => e instanceof StoreUnavailableError && e.code === 451 && e.enhanced === '4.3.0';

describe('redis store: outage', () => {
  it('serves last known values, fails the rest fast, and recovers when Redis returns', async () => {
    // Written by "another node" before this store ever connected: only the warm-up can know them.
    const other = new Redis(redis.url);
    await other.set('p1:dir:user:bob@example.test', '{"address":"bob@example.test"}');
    await other.hset('p1:policy:relay:networks', 'n1', '192.0.2.0/24');
    await other.hset('p1:sieve:rules', 'r1', 'keep;');
    await other.set('p1:greylist:x', '1');
    await other.quit();

    const s: RedisStore = createRedisStore({ url: redis.url, prefix: 'p1:', commandTimeoutMs: 300 });
    try {
      await s.set('dir:user:alice@example.test', '{"address":"alice@example.test"}');
      await s.refreshLastKnown();
      const events: ChangeEvent[] = [];
      s.subscribe('directory', (ev) => events.push(ev));
      await s.publish('directory', 'before');
      await waitFor(() => events.length === 1, 'the first event');
      assert.equal(storeHealth(s).healthy, true);
      assert.ok((storeHealth(s).lastKnownKeys ?? 0) >= 4);

      await redis.kill();
      await waitFor(() => !storeHealth(s).healthy, 'health to turn false');
      const h = storeHealth(s);
      assert.equal(h.driver, 'redis');
      assert.ok(h.error, 'the reason is given');

      // Last known values: read before, written here, or loaded at connect.
      assert.equal(await s.get('dir:user:alice@example.test'), '{"address":"alice@example.test"}');
      assert.equal(await s.get('dir:user:bob@example.test'), '{"address":"bob@example.test"}');
      assert.equal(await s.get('dir:user:nobody@example.test'), null, 'a warmed prefix also knows what is absent');
      assert.deepEqual(await s.hgetall('policy:relay:networks'), { n1: '192.0.2.0/24' });
      assert.equal(await s.hget('sieve:rules', 'r1'), 'keep;');
      assert.deepEqual((await s.keys('dir:user:')).sort(), ['dir:user:alice@example.test', 'dir:user:bob@example.test']);

      // Everything else: a typed error, at once.
      await assert.rejects(s.get('greylist:x'), unavailable);
      await assert.rejects(s.incr('rate:y', { ttlMs: 60_000 }), unavailable);
      await assert.rejects(s.set('dir:user:new@example.test', '{}'), unavailable);
      await assert.rejects(s.hset('policy:relay:networks', 'n2', '198.51.100.0/24'), unavailable);
      await assert.rejects(s.publish('directory', 'x'), unavailable);
      await assert.rejects(s.keys('greylist:'), unavailable);
      // The failed write changed nothing known.
      assert.deepEqual(await s.hgetall('policy:relay:networks'), { n1: '192.0.2.0/24' });

      await redis.start();
      await waitFor(() => storeHealth(s).healthy, 'health back', 10_000);
      await waitFor(() => events.some((e) => e.message === '{"resync":true}'), 'a resync event');
      // The restarted server kept nothing (no persistence): Redis is the truth again.
      assert.equal(await s.get('dir:user:alice@example.test'), null);
      assert.equal(await s.incr('rate:y', { ttlMs: 60_000 }), 1);
      await s.publish('directory', 'after');
      await waitFor(() => events.some((e) => e.message === 'after'), 'events flow again');
    } finally {
      await s.close();
    }
  });

  it('a server that stops answering: commands time out as unavailable, health turns false, then recovers', async () => {
    const s = createRedisStore({ url: redis.url, prefix: 'p2:', commandTimeoutMs: 200 });
    try {
      await s.hset('sieve:rules', 'r', 'discard;');
      redis.pause();
      try {
        await assert.rejects(s.incr('n'), unavailable);
        assert.equal(storeHealth(s).healthy, false);
        assert.equal(await s.hget('sieve:rules', 'r'), 'discard;');
      } finally {
        redis.resume();
      }
      await waitFor(async () => (await s.incr('n').catch(() => 0)) > 0, 'commands answered again');
      assert.equal(storeHealth(s).healthy, true);
    } finally {
      await s.close();
    }
  });

  it('with Redis down from the start, commands fail (not hang) and the store connects when it appears', async () => {
    await redis.kill();
    const s = createRedisStore({ url: redis.url, prefix: 'p3:', connectTimeoutMs: 500 });
    try {
      await assert.rejects(s.get('dir:user:a@example.test'), unavailable);
      assert.equal(storeHealth(s).healthy, false);
      await redis.start();
      await waitFor(() => storeHealth(s).healthy, 'connected', 10_000);
      assert.equal(await s.set('k', 'v'), true);
    } finally {
      await s.close();
    }
  });

  it("plugins during an outage: counters follow the entry's on_error, relay policy uses the last known networks", async () => {
    const s = createRedisStore({ url: redis.url, prefix: 'p4:', commandTimeoutMs: 300 });
    const users = { 'alice@example.test': 'pw' };
    const auth = testPlugin(authPlugin, { delay: 0, max_delay: 0 }, { store: s, users });
    const authOpen = testPlugin(authPlugin, { delay: 0, max_delay: 0, on_error: 'fail-open' }, { store: s, users });
    const relay = testPlugin(relayAcl, {}, { store: s, global: { relay: { networks: [] } } });
    const login = { auth: { username: 'alice@example.test', password: 'pw' } };
    try {
      await s.hset('policy:relay:networks', 'n1', '192.0.2.0/24');
      assert.deepEqual((await auth.run('auth', login)).verdict, { kind: 'accept' });
      await redis.kill();
      await waitFor(() => !storeHealth(s).healthy, 'the outage seen');

      // auth keeps failure counters in the store: tempfail by default, "no opinion" with fail-open.
      const down = await auth.run('auth', login);
      assert.deepEqual(down.verdict, { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' });
      assert.match(down.trace.at(-1)?.detail ?? '', /store unavailable/);
      assert.equal((await authOpen.run('auth', login)).verdict.kind, 'next');

      // relay-acl reads the run-time networks at connect: the last known list still applies.
      relay.newConnection({ remoteAddress: '192.0.2.7' });
      await relay.run('connect');
      assert.equal(relay.session.relaying, true);
      relay.newConnection({ remoteAddress: '198.51.100.7' });
      await relay.run('connect');
      assert.equal(relay.session.relaying, false);
    } finally {
      await auth.close();
      await authOpen.close();
      await relay.close();
      await s.close();
    }
  });
});
