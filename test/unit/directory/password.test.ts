// scrypt password hashes: format, verification, malformed hashes, parameter bounds, and the dummy
// work done for unknown users.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { burnDummy, dummyHash, hashPassword, parseHash, verifyPassword, type ScryptParams } from '../../../src/directory/password.js';

const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };

describe('password hashing', () => {
  it('encodes scrypt$N$r$p$salt$hash and verifies only the right password', async () => {
    const h = await hashPassword('correct horse', FAST);
    assert.match(h, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    assert.equal(await verifyPassword('correct horse', h), true);
    for (const wrong of ['correct horsE', 'correct horse ', '', 'correct']) assert.equal(await verifyPassword(wrong, h), false, wrong);
  });

  it('salts every hash', async () => {
    const [a, b] = await Promise.all([hashPassword('same', FAST), hashPassword('same', FAST)]);
    assert.notEqual(a, b);
    assert.notEqual(parseHash(a)!.salt.toString('hex'), parseHash(b)!.salt.toString('hex'));
  });

  it('hashes the UTF-8 bytes as given', async () => {
    const h = await hashPassword('pässwörd 🔑', FAST);
    assert.equal(await verifyPassword('pässwörd 🔑', h), true);
    // NFC vs NFD are different byte strings: no normalisation happens.
    assert.equal(await verifyPassword('pässwörd 🔑'.normalize('NFD'), h), false);
  });

  it('uses the parameters stored in the hash', async () => {
    const h = await hashPassword('pw', { N: 2048, r: 4, p: 2 });
    assert.deepEqual({ ...parseHash(h)!, salt: undefined, key: undefined }, { N: 2048, r: 4, p: 2, salt: undefined, key: undefined });
    assert.equal(await verifyPassword('pw', h), true);
  });

  const good = 'scrypt$1024$8$1$c2FsdHNhbHRzYWx0c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5';
  const malformed: [string, string][] = [
    ['empty', ''],
    ['other scheme', good.replace('scrypt', 'bcrypt')],
    ['too few parts', 'scrypt$1024$8$1$c2FsdA=='],
    ['N not a power of two', good.replace('$1024$', '$1000$')],
    ['N too large', good.replace('$1024$', `$${2 ** 21}$`)],
    ['r zero', good.replace('$8$', '$0$')],
    ['p too large', good.replace('$8$1$', '$8$99$')],
    ['salt not base64', good.replace('c2FsdHNhbHRzYWx0c2FsdA==', 'not*base64')],
    ['key too short', good.replace(/\$[^$]+$/, '$a2V5')],
    ['negative N', good.replace('$1024$', '$-1024$')],
  ];
  for (const [name, h] of malformed) {
    it(`refuses a malformed hash: ${name}`, async () => {
      assert.equal(parseHash(h), null);
      assert.equal(await verifyPassword('anything', h, FAST), false);
    });
  }
  it('accepts the well-formed sample', () => assert.ok(parseHash(good)));

  it('refuses to create hashes with bad parameters', async () => {
    await assert.rejects(hashPassword('pw', { N: 1000, r: 8, p: 1 }), RangeError);
    await assert.rejects(hashPassword('pw', { N: 1024, r: 0, p: 1 }), RangeError);
  });

  it('the dummy check always fails and does the work of a real verification', async () => {
    // The cost of a check is set by the scrypt parameters and key length it derives with, so the
    // dummy must use exactly those of a real hash made with the same parameters (no clock here:
    // timings on a shared machine prove nothing).
    const params: ScryptParams = { N: 2 ** 14, r: 8, p: 1 };
    const real = parseHash(await hashPassword('pw', params))!;
    const dummy = parseHash(await dummyHash(params))!;
    assert.deepEqual([dummy.N, dummy.r, dummy.p, dummy.key.length, dummy.salt.length], [real.N, real.r, real.p, real.key.length, real.salt.length]);
    assert.equal(await dummyHash(params), await dummyHash(params), 'made once per parameter set');
    for (const pw of ['pw', 'wrong', '']) assert.equal(await burnDummy(pw, params), false);
    // A malformed stored hash takes the dummy path too, and fails.
    assert.equal(await verifyPassword('pw', 'scrypt$broken', params), false);
  });
});
