// scrypt password hashes: format, verification, malformed hashes, parameter bounds, and the dummy
// work done for unknown users.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { burnDummy, hashPassword, parseHash, verifyPassword, type ScryptParams } from '../../../src/directory/password.js';

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

  it('the dummy check always fails and costs a real verification', async () => {
    const params: ScryptParams = { N: 2 ** 14, r: 8, p: 1 };
    const h = await hashPassword('pw', params);
    await burnDummy('warm-up', params); // the dummy hash itself is made once
    const time = async (fn: () => Promise<unknown>) => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < 4; i++) await fn();
      return Number(process.hrtime.bigint() - t);
    };
    const real = await time(() => verifyPassword('wrong', h));
    const dummy = await time(() => burnDummy('wrong', params));
    assert.equal(await burnDummy('pw', params), false);
    assert.ok(dummy > real * 0.4, `dummy ${dummy} ns vs real ${real} ns`);
  });
});
