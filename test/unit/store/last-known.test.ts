// The last-known cache (src/store/last-known.ts) the Redis driver answers from during an outage:
// which keys it covers, what a warmed prefix knows about absent keys, partial and complete hashes,
// and that an older result never replaces a newer one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LastKnown } from '../../../src/store/last-known.js';

const miss = { hit: false };
const hit = <T>(value: T) => ({ hit: true, value });

describe('LastKnown', () => {
  it('covers exact keys and prefixes (entries ending in ":"), nothing else', () => {
    const lk = new LastKnown(['dir:', 'sieve:rules']);
    const cases: [string, boolean][] = [
      ['dir:user:a@b', true],
      ['dir:', true],
      ['sieve:rules', true],
      ['sieve:rules:versions', false],
      ['greylist:x', false],
      ['di', false],
    ];
    for (const [key, want] of cases) assert.equal(lk.covers(key), want, key);
    lk.putString('greylist:x', '1', lk.next());
    assert.deepEqual(lk.get('greylist:x'), miss, 'an uncovered key is never kept');
  });

  it('strings: known value, known absence, unknown; a warmed prefix knows what is absent', () => {
    const lk = new LastKnown(['dir:']);
    lk.putString('dir:a', 'A', lk.next());
    lk.putString('dir:gone', null, lk.next());
    assert.deepEqual(lk.get('dir:a'), hit('A'));
    assert.deepEqual(lk.get('dir:gone'), hit(null));
    assert.deepEqual(lk.get('dir:never-seen'), miss);
    assert.deepEqual(lk.keys('dir:'), miss, 'no listing before a full warm');
    const warm = lk.next();
    lk.putString('dir:b', 'B', lk.next());
    lk.finishPrefix('dir:', warm);
    assert.deepEqual(lk.get('dir:never-seen'), hit(null));
    assert.deepEqual(lk.get('dir:a'), hit(null), 'not refreshed by the warm: gone from Redis');
    assert.deepEqual(lk.keys('dir:'), hit(['dir:b']));
    lk.forget('dir:c', lk.next());
    assert.deepEqual(lk.get('dir:c'), miss, 'a TTL value or counter is unknown');
    assert.deepEqual(lk.keys('dir:'), miss, 'so a listing cannot be trusted');
  });

  it('hashes: complete from HGETALL, partial from HGET, fields written and deleted', () => {
    const lk = new LastKnown(['policy:', 'sieve:rules']);
    lk.putHash('policy:relay:networks', { n1: '10.0.0.0/8' }, lk.next());
    assert.deepEqual(lk.hgetall('policy:relay:networks'), hit({ n1: '10.0.0.0/8' }));
    assert.deepEqual(lk.hget('policy:relay:networks', 'n2'), hit(null));
    lk.putField('policy:relay:networks', 'n2', '192.0.2.0/24', lk.next());
    lk.putField('policy:relay:networks', 'n1', null, lk.next());
    assert.deepEqual(lk.hgetall('policy:relay:networks'), hit({ n2: '192.0.2.0/24' }));
    lk.putField('policy:relay:networks', 'n2', null, lk.next());
    assert.deepEqual(lk.hgetall('policy:relay:networks'), hit({}), 'the last field gone: the key is gone');

    lk.putField('sieve:rules', 'a', 'keep;', lk.next());
    lk.putField('sieve:rules', 'b', null, lk.next());
    assert.deepEqual(lk.hget('sieve:rules', 'a'), hit('keep;'));
    assert.deepEqual(lk.hget('sieve:rules', 'b'), hit(null));
    assert.deepEqual(lk.hget('sieve:rules', 'c'), miss);
    assert.deepEqual(lk.hgetall('sieve:rules'), miss, 'only some fields are known');
  });

  it('an older result never replaces a newer one', () => {
    const lk = new LastKnown(['dir:']);
    const warmRead = lk.next(); // sent first
    const write = lk.next(); // sent second, answered first
    lk.putString('dir:a', 'new', write);
    lk.putString('dir:a', 'old', warmRead);
    assert.deepEqual(lk.get('dir:a'), hit('new'));
  });

  it('keeps at most maxKeys slots and says so once', () => {
    let full = 0;
    const lk = new LastKnown(['dir:'], 2, () => full++);
    for (const k of ['dir:a', 'dir:b', 'dir:c', 'dir:d']) lk.putString(k, 'v', lk.next());
    assert.equal(lk.size, 2);
    assert.equal(full, 1);
    lk.putString('dir:a', 'v2', lk.next());
    assert.deepEqual(lk.get('dir:a'), hit('v2'), 'known keys still update');
  });
});
