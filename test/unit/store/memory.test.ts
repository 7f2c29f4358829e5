// The in-memory Store against the Store contract's Redis-like semantics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore, StoreTypeError } from '../../../src/store/memory.js';

function clocked() {
  let t = 1_000_000;
  const store = new MemoryStore({ now: () => t, sweepIntervalMs: 0 });
  return { store, advance: (ms: number) => (t += ms) };
}

test('get/set/del round trip, missing keys are null', async () => {
  const s = new MemoryStore();
  assert.equal(await s.get('a'), null);
  assert.equal(await s.set('a', '1'), true);
  assert.equal(await s.get('a'), '1');
  assert.equal(await s.del('a', 'b'), 1);
  assert.equal(await s.get('a'), null);
  await s.close();
});

test('set ifAbsent only writes a missing key', async () => {
  const s = new MemoryStore();
  assert.equal(await s.set('k', 'first', { ifAbsent: true }), true);
  assert.equal(await s.set('k', 'second', { ifAbsent: true }), false);
  assert.equal(await s.get('k'), 'first');
  await s.close();
});

test('TTL: keys expire, ttl reports PTTL semantics', async () => {
  const { store, advance } = clocked();
  await store.set('t', 'v', { ttlMs: 1000 });
  await store.set('p', 'v');
  assert.equal(await store.ttl('t'), 1000);
  assert.equal(await store.ttl('p'), -1);
  assert.equal(await store.ttl('none'), -2);
  advance(999);
  assert.equal(await store.get('t'), 'v');
  advance(1);
  assert.equal(await store.get('t'), null);
  assert.equal(await store.ttl('t'), -2);
  assert.equal(await store.del('t'), 0, 'an expired key does not count as deleted');
  // An expired key can be set again with ifAbsent.
  await store.set('x', '1', { ttlMs: 10 });
  advance(10);
  assert.equal(await store.set('x', '2', { ifAbsent: true }), true);
  await store.close();
});

test('set replaces the TTL (plain SET clears it)', async () => {
  const { store, advance } = clocked();
  await store.set('k', 'a', { ttlMs: 100 });
  await store.set('k', 'b');
  advance(1000);
  assert.equal(await store.get('k'), 'b');
  await store.close();
});

test('incr: starts at 0, TTL only on creation (window counter)', async () => {
  const { store, advance } = clocked();
  assert.equal(await store.incr('c', { ttlMs: 1000 }), 1);
  advance(600);
  assert.equal(await store.incr('c', { ttlMs: 1000 }), 2);
  assert.equal(await store.ttl('c'), 400, 'the second incr did not extend the window');
  assert.equal(await store.incr('c', { by: 5 }), 7);
  advance(400);
  assert.equal(await store.incr('c', { ttlMs: 1000 }), 1, 'a new window after expiry');
  await store.set('s', 'abc');
  await assert.rejects(store.incr('s'), /not an integer/);
  await store.close();
});

test('hashes: hset/hget/hdel/hgetall, empty hash disappears', async () => {
  const s = new MemoryStore();
  await s.hset('h', 'a', '1');
  await s.hset('h', 'b', '2');
  assert.equal(await s.hget('h', 'a'), '1');
  assert.equal(await s.hget('h', 'zz'), null);
  assert.deepEqual(await s.hgetall('h'), { a: '1', b: '2' });
  assert.equal(await s.hdel('h', 'a', 'zz'), 1);
  assert.equal(await s.hdel('h', 'b'), 1);
  assert.deepEqual(await s.keys('h'), []);
  assert.deepEqual(await s.hgetall('nothing'), {});
  await s.close();
});

test('WRONGTYPE between strings and hashes', async () => {
  const s = new MemoryStore();
  await s.set('str', 'x');
  await s.hset('hash', 'f', 'v');
  await assert.rejects(s.hget('str', 'f'), StoreTypeError);
  await assert.rejects(s.hset('str', 'f', 'v'), StoreTypeError);
  await assert.rejects(s.get('hash'), StoreTypeError);
  await assert.rejects(s.incr('hash'), StoreTypeError);
  // SET overwrites any type, as in Redis.
  await s.set('hash', 'now a string');
  assert.equal(await s.get('hash'), 'now a string');
  await s.close();
});

test('keys by prefix skips expired keys', async () => {
  const { store, advance } = clocked();
  await store.set('dnsbl:a', '1', { ttlMs: 10 });
  await store.set('dnsbl:b', '1');
  await store.hset('dnsblx', 'f', '1');
  await store.set('other', '1');
  assert.deepEqual((await store.keys('dnsbl:')).sort(), ['dnsbl:a', 'dnsbl:b']);
  advance(10);
  assert.deepEqual(await store.keys('dnsbl:'), ['dnsbl:b']);
  assert.equal(store.size, 3);
  await store.close();
});

test('pub/sub: delivered asynchronously, unsubscribe works, a throwing handler does not starve others', async () => {
  const s = new MemoryStore();
  const got: string[] = [];
  const unsub = s.subscribe('rules', (ev) => got.push(`1:${ev.channel}:${ev.message}`));
  s.subscribe('rules', () => {
    throw new Error('bad handler');
  });
  s.subscribe('rules', (ev) => got.push(`3:${ev.message}`));
  s.subscribe('other', (ev) => got.push(`other:${ev.message}`));
  await s.publish('rules', 'a');
  assert.deepEqual(got, [], 'not delivered inside publish()');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, ['1:rules:a', '3:a']);
  unsub();
  await s.publish('rules', 'b');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, ['1:rules:a', '3:a', '3:b']);
  await s.close();
});

test('after close every call fails', async () => {
  const s = new MemoryStore();
  await s.set('a', '1');
  await s.close();
  await assert.rejects(s.get('a'), /closed/);
  await assert.rejects(s.set('a', '1'), /closed/);
  await assert.rejects(s.publish('c', 'm'), /closed/);
  assert.throws(() => s.subscribe('c', () => {}), /closed/);
  await s.close(); // idempotent
});

test('invalid TTL is refused', async () => {
  const s = new MemoryStore();
  await assert.rejects(s.set('a', '1', { ttlMs: 0 }), RangeError);
  await assert.rejects(s.incr('a', { ttlMs: -5 }), RangeError);
  await s.close();
});
