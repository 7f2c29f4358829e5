// The Store contract (src/store/store.ts) as a reusable suite: every driver (memory, embedded,
// redis) runs it, so they agree with each other and with Redis on the subset we use.
//   runStoreContract('embedded', () => createEmbeddedStore(tmpDir()));
// `makeStore` must return a store that is empty; each test closes the store it made. Timing
// tests use short real TTLs (tens of ms), as a Redis server's clock cannot be mocked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ChangeEvent, Store } from '../../../src/store/store.js';

export type MakeStore = () => Store | Promise<Store>;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `pred` until true or `timeoutMs` passes; then fails with `what`. */
export async function waitFor(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export function runStoreContract(name: string, makeStore: MakeStore): void {
  /** Runs `fn` with a fresh store and always closes it. */
  const withStore = (fn: (s: Store) => Promise<void>) => async () => {
    const s = await makeStore();
    try {
      await fn(s);
    } finally {
      await s.close();
    }
  };

  describe(`Store contract: ${name}`, () => {
    describe('strings', () => {
      it(
        'get of a missing key is null; set then get returns the value; set overwrites',
        withStore(async (s) => {
          assert.equal(await s.get('k'), null);
          assert.equal(await s.set('k', 'v1'), true);
          assert.equal(await s.get('k'), 'v1');
          assert.equal(await s.set('k', 'v2'), true);
          assert.equal(await s.get('k'), 'v2');
        }),
      );

      it(
        'values round-trip exactly: empty, newlines, quotes, unicode, JSON',
        withStore(async (s) => {
          const values = ['', 'a\nb\r\nc', '"quoted" \\ back', 'line\u2028sep', 'émoji 😀 ünïcode', JSON.stringify({ a: [1, 'x\n'] }), 'x'.repeat(70_000)];
          for (const [i, v] of values.entries()) await s.set(`v:${i}`, v);
          for (const [i, v] of values.entries()) assert.equal(await s.get(`v:${i}`), v, `value ${i}`);
        }),
      );

      it(
        'set ifAbsent (SET NX) writes only when the key is missing',
        withStore(async (s) => {
          assert.equal(await s.set('nx', 'first', { ifAbsent: true }), true);
          assert.equal(await s.set('nx', 'second', { ifAbsent: true }), false);
          assert.equal(await s.get('nx'), 'first');
        }),
      );

      it(
        'concurrent ifAbsent sets: exactly one wins',
        withStore(async (s) => {
          const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.set('race', String(i), { ifAbsent: true })));
          assert.equal(results.filter(Boolean).length, 1);
          assert.equal(await s.get('race'), String(results.indexOf(true)));
        }),
      );

      it(
        'ttlMs expires the key; ttl reports the remaining time, -1 without expiry, -2 when missing',
        withStore(async (s) => {
          await s.set('t', 'v', { ttlMs: 60 });
          const left = await s.ttl('t');
          assert.ok(left > 0 && left <= 60, `ttl ${left}`);
          await s.set('p', 'v');
          assert.equal(await s.ttl('p'), -1);
          assert.equal(await s.ttl('missing'), -2);
          await sleep(90);
          assert.equal(await s.get('t'), null);
          assert.equal(await s.ttl('t'), -2);
          assert.deepEqual(await s.keys('t'), []);
        }),
      );

      it(
        'set without ttlMs clears an earlier TTL; ifAbsent succeeds once the key expired',
        withStore(async (s) => {
          await s.set('k', 'a', { ttlMs: 50 });
          await s.set('k', 'b');
          assert.equal(await s.ttl('k'), -1);
          await s.set('e', 'a', { ttlMs: 20 });
          await sleep(40);
          assert.equal(await s.set('e', 'b', { ifAbsent: true }), true);
          assert.equal(await s.get('e'), 'b');
        }),
      );

      it(
        'a non-positive or non-finite ttlMs is rejected and writes nothing',
        withStore(async (s) => {
          for (const ttlMs of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
            await assert.rejects(s.set('bad', 'v', { ttlMs }), Error, `ttlMs ${ttlMs}`);
          }
          assert.equal(await s.get('bad'), null);
        }),
      );

      it(
        'del returns how many keys existed, counting a repeated key once',
        withStore(async (s) => {
          await s.set('a', '1');
          await s.set('b', '2');
          await s.hset('h', 'f', 'v');
          assert.equal(await s.del('a', 'b', 'a', 'nope'), 2);
          assert.equal(await s.del('h'), 1);
          assert.equal(await s.del('a'), 0);
          assert.equal(await s.get('a'), null);
          assert.deepEqual(await s.hgetall('h'), {});
        }),
      );

      it(
        'del of an expired key counts 0',
        withStore(async (s) => {
          await s.set('x', '1', { ttlMs: 10 });
          await sleep(30);
          assert.equal(await s.del('x'), 0);
        }),
      );
    });

    describe('incr', () => {
      it(
        'a missing key starts at 0; by adds, negative too',
        withStore(async (s) => {
          assert.equal(await s.incr('c'), 1);
          assert.equal(await s.incr('c'), 2);
          assert.equal(await s.incr('c', { by: 10 }), 12);
          assert.equal(await s.incr('c', { by: -20 }), -8);
          assert.equal(await s.get('c'), '-8');
          assert.equal(await s.incr('d', { by: 5 }), 5);
        }),
      );

      it(
        'ttlMs is set only when the key is created; later increments keep the TTL',
        withStore(async (s) => {
          assert.equal(await s.incr('w', { ttlMs: 1000 }), 1);
          assert.equal(await s.incr('w', { ttlMs: 100_000 }), 2);
          const left = await s.ttl('w');
          assert.ok(left > 0 && left <= 1000, `ttl ${left}`);
          await s.set('p', '5');
          assert.equal(await s.incr('p', { ttlMs: 1000 }), 6);
          assert.equal(await s.ttl('p'), -1);
          await s.set('q', '1', { ttlMs: 1000 });
          await s.incr('q');
          const q = await s.ttl('q');
          assert.ok(q > 0 && q <= 1000, `ttl ${q}`);
        }),
      );

      it(
        'a window counter restarts after it expires',
        withStore(async (s) => {
          await s.incr('win', { ttlMs: 30 });
          await s.incr('win', { ttlMs: 30 });
          await sleep(60);
          assert.equal(await s.incr('win', { ttlMs: 30 }), 1);
        }),
      );

      it(
        'concurrent increments are atomic: every result distinct, the total exact',
        withStore(async (s) => {
          const got = await Promise.all(Array.from({ length: 100 }, () => s.incr('n')));
          assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i + 1));
          assert.equal(await s.get('n'), '100');
        }),
      );

      it(
        'incr of a non-integer value, of a hash, or by a non-integer is rejected and changes nothing',
        withStore(async (s) => {
          await s.set('str', 'abc');
          await assert.rejects(s.incr('str'));
          assert.equal(await s.get('str'), 'abc');
          await s.hset('h', 'f', '1');
          await assert.rejects(s.incr('h'));
          await s.set('num', '1');
          await assert.rejects(s.incr('num', { by: 1.5 }));
          assert.equal(await s.get('num'), '1');
        }),
      );
    });

    describe('hashes', () => {
      it(
        'hset/hget/hgetall/hdel',
        withStore(async (s) => {
          assert.equal(await s.hget('h', 'f'), null);
          assert.deepEqual(await s.hgetall('h'), {});
          await s.hset('h', 'a', '1');
          await s.hset('h', 'b', 'two\nlines');
          await s.hset('h', 'a', 'one');
          assert.equal(await s.hget('h', 'a'), 'one');
          assert.deepEqual(await s.hgetall('h'), { a: 'one', b: 'two\nlines' });
          assert.equal(await s.hdel('h', 'a', 'zzz', 'a'), 1);
          assert.deepEqual(await s.hgetall('h'), { b: 'two\nlines' });
          assert.equal(await s.hdel('missing', 'a'), 0);
          assert.equal(await s.ttl('h'), -1);
        }),
      );

      it(
        'removing the last field removes the key',
        withStore(async (s) => {
          await s.hset('h', 'only', 'x');
          assert.deepEqual(await s.keys('h'), ['h']);
          assert.equal(await s.hdel('h', 'only'), 1);
          assert.deepEqual(await s.keys('h'), []);
          assert.equal(await s.ttl('h'), -2);
        }),
      );

      it(
        'a field named like an Object prototype member is an ordinary field',
        withStore(async (s) => {
          await s.hset('h', '__proto__', 'p');
          await s.hset('h', 'constructor', 'c');
          assert.equal(await s.hget('h', '__proto__'), 'p');
          assert.equal(await s.hget('h', 'toString'), null);
          const all = await s.hgetall('h');
          assert.equal(Object.keys(all).length, 2);
          assert.equal(all['constructor'], 'c');
        }),
      );

      it(
        'WRONGTYPE: hash operations on a string, and get on a hash, are rejected; set replaces a hash',
        withStore(async (s) => {
          await s.set('s', 'v');
          await assert.rejects(s.hset('s', 'f', 'v'));
          await assert.rejects(s.hget('s', 'f'));
          await assert.rejects(s.hgetall('s'));
          assert.equal(await s.get('s'), 'v');
          await s.hset('h', 'f', 'v');
          await assert.rejects(s.get('h'));
          await s.set('h', 'now a string');
          assert.equal(await s.get('h'), 'now a string');
        }),
      );
    });

    describe('keys', () => {
      it(
        'lists live keys with the prefix, strings and hashes alike',
        withStore(async (s) => {
          await s.set('user:a', '1');
          await s.set('user:b', '2');
          await s.hset('user:h', 'f', 'v');
          await s.set('other:a', '3');
          await s.set('user:gone', '4', { ttlMs: 10 });
          await sleep(30);
          assert.deepEqual((await s.keys('user:')).sort(), ['user:a', 'user:b', 'user:h']);
          assert.deepEqual(await s.keys('none:'), []);
          assert.equal((await s.keys('')).length, 4);
        }),
      );
    });

    describe('pub/sub', () => {
      it(
        'delivers to subscribers of the channel only, after publish returns control',
        withStore(async (s) => {
          const got: ChangeEvent[] = [];
          const other: ChangeEvent[] = [];
          s.subscribe('directory', (ev) => got.push(ev));
          s.subscribe('rules', (ev) => other.push(ev));
          const p = s.publish('directory', '{"op":"add"}');
          assert.equal(got.length, 0, 'never delivered inside publish');
          await p;
          await waitFor(() => got.length === 1, 'the event');
          assert.deepEqual(got[0], { channel: 'directory', message: '{"op":"add"}' });
          await sleep(20);
          assert.equal(other.length, 0);
        }),
      );

      it(
        'keeps order; unsubscribe stops delivery; one handler subscribed twice gets it twice',
        withStore(async (s) => {
          const got: string[] = [];
          const h = (ev: ChangeEvent) => got.push(ev.message);
          const un1 = s.subscribe('c', h);
          const un2 = s.subscribe('c', h);
          for (const m of ['1', '2', '3']) await s.publish('c', m);
          await waitFor(() => got.length === 6, 'six deliveries');
          assert.deepEqual(got, ['1', '1', '2', '2', '3', '3']);
          un1();
          await s.publish('c', '4');
          await waitFor(() => got.length === 7, 'one delivery');
          un2();
          un2(); // twice is harmless
          await s.publish('c', '5');
          await sleep(30);
          assert.deepEqual(got.slice(6), ['4']);
        }),
      );

      it(
        'a throwing handler does not stop the others; publish without subscribers is fine',
        withStore(async (s) => {
          await s.publish('nobody', 'x');
          const got: string[] = [];
          s.subscribe('c', () => {
            throw new Error('boom');
          });
          s.subscribe('c', (ev) => got.push(ev.message));
          await s.publish('c', 'm');
          await waitFor(() => got.length === 1, 'the second handler');
        }),
      );
    });

    describe('close', () => {
      it('every call rejects after close; close twice is fine', async () => {
        const s = await makeStore();
        await s.set('k', 'v');
        await s.close();
        await s.close();
        await assert.rejects(s.get('k'));
        await assert.rejects(s.set('k', 'v'));
        await assert.rejects(s.incr('n'));
        await assert.rejects(s.hgetall('h'));
        await assert.rejects(s.keys(''));
        await assert.rejects(s.publish('c', 'm'));
      });
    });
  });
}
