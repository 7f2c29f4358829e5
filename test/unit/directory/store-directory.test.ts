// The store-backed directory: resolution (aliases, catch-all, RFC 5233 subaddressing, case),
// recursive expansion with loops and depth, authentication, changes and their validation, and
// cache invalidation by "directory" events from another directory instance on the same store.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Resolution } from '../../../src/directory/directory.js';
import { createDirectory, DirectoryError, MAX_DEPTH, type DirectoryErrorCode, type StoreDirectory } from '../../../src/directory/store-directory.js';
import type { ScryptParams } from '../../../src/directory/password.js';
import { createEmbeddedStore } from '../../../src/store/embedded.js';
import { createMemoryStore } from '../../../src/store/memory.js';
import type { Store } from '../../../src/store/store.js';
import { waitFor } from '../store/contract.js';

const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };
const DOMAINS = ['example.test', 'Example.ORG.'];

/** A directory with the fixture below, on a fresh memory store. */
async function fixture(store: Store = createMemoryStore()): Promise<StoreDirectory> {
  const d = createDirectory({ store, localDomains: DOMAINS, scrypt: FAST });
  await d.addUser('alice@example.test', 'pw-alice');
  await d.addUser('Bob@Example.Test', 'pw-bob');
  await d.addUser('carol@example.org', 'pw-carol');
  await d.addUser('keep@example.test', 'pw-keep');
  await d.addUser('nopw@example.test');
  await d.setAlias('team@example.test', ['alice@example.test', 'BOB@example.test']);
  await d.setAlias('fwd@example.test', ['Someone@Remote.Example']);
  await d.setAlias('list@example.test', ['team@example.test', 'carol@example.org', 'x@remote.example', 'alice@example.test']);
  await d.setAlias('loop1@example.test', ['loop2@example.test']);
  await d.setAlias('loop2@example.test', ['loop1@example.test']);
  await d.setAlias('keep@example.test', ['keep@example.test', 'archive@remote.example']);
  await d.setAlias('dangling@example.test', ['nobody@example.test']);
  await d.setAlias('plus@example.test', ['alice+fromalias@example.test']);
  await d.setAlias('twice@example.test', ['alice+x@example.test', 'ALICE@example.test', 'team@example.test']);
  // chainN → chainN+1 → … → alice: short chains resolve, one longer than MAX_DEPTH does not.
  for (let i = 0; i < MAX_DEPTH + 2; i++) await d.setAlias(`chain${i}@example.test`, [i === MAX_DEPTH + 1 ? 'alice@example.test' : `chain${i + 1}@example.test`]);
  await d.setCatchAll('EXAMPLE.org', 'carol@example.org');
  return d;
}

describe('directory: resolve', () => {
  let d: StoreDirectory;
  before(async () => {
    d = await fixture();
  });

  const cases: [string, Resolution][] = [
    ['alice@example.test', { kind: 'local', user: 'alice@example.test' }],
    ['ALICE@EXAMPLE.TEST', { kind: 'local', user: 'alice@example.test' }],
    ['<alice@example.test>', { kind: 'local', user: 'alice@example.test' }],
    ['bob@example.test', { kind: 'local', user: 'bob@example.test' }],
    ['alice+news@example.test', { kind: 'local', user: 'alice@example.test', detail: 'news' }],
    ['Alice+News@example.test', { kind: 'local', user: 'alice@example.test', detail: 'news' }],
    ['alice+@example.test', { kind: 'local', user: 'alice@example.test', detail: '' }],
    ['alice+a+b@example.test', { kind: 'local', user: 'alice@example.test', detail: 'a+b' }],
    ['+alice@example.test', { kind: 'unknown' }],
    ['nobody@example.test', { kind: 'unknown' }],
    ['nobody+alice@example.test', { kind: 'unknown' }],
    ['team@example.test', { kind: 'alias', targets: ['alice@example.test', 'bob@example.test'] }],
    ['team+x@example.test', { kind: 'alias', targets: ['alice@example.test', 'bob@example.test'] }],
    ['keep@example.test', { kind: 'alias', targets: ['keep@example.test', 'archive@remote.example'] }],
    ['fwd@example.test', { kind: 'alias', targets: ['Someone@remote.example'] }],
    ['anyone@example.org', { kind: 'alias', targets: ['carol@example.org'] }],
    ['carol@EXAMPLE.ORG.', { kind: 'local', user: 'carol@example.org' }],
    ['someone@remote.example', { kind: 'foreign' }],
    ['alice@example.test.remote.example', { kind: 'foreign' }],
    ['alice@[192.0.2.1]', { kind: 'foreign' }],
    ['nopw@example.test', { kind: 'local', user: 'nopw@example.test' }],
    // RFC 5321 §4.5.1: postmaster is always accepted; the first domain's is its own mailbox...
    ['postmaster@example.test', { kind: 'local', user: 'postmaster@example.test' }],
    ['PostMaster@Example.Test', { kind: 'local', user: 'postmaster@example.test' }],
    // ...but a catch-all (or a user, an alias) of the domain comes first, as for any address.
    ['postmaster@example.org', { kind: 'alias', targets: ['carol@example.org'] }],
    ['postmaster+x@example.test', { kind: 'unknown' }],
  ];
  for (const [input, want] of cases) {
    it(`${input} → ${want.kind}`, async () => assert.deepEqual(await d.resolve(input), want));
  }

  const malformed = ['no-at-sign', '@example.test', 'alice@', 'a b@example.test', 'a..b@example.test', 'alice@exa mple.test', '"unterminated@example.test'];
  for (const input of malformed) {
    it(`refuses malformed ${JSON.stringify(input)} with a clear error`, async () => {
      await assert.rejects(d.resolve(input), (e: unknown) => e instanceof DirectoryError && e.code === 'invalid-address' && e.message.includes(input));
      await assert.rejects(d.expand(input), DirectoryError);
    });
  }

  it('isLocalDomain ignores case and a trailing dot', () => {
    assert.equal(d.isLocalDomain('EXAMPLE.TEST'), true);
    assert.equal(d.isLocalDomain('example.org.'), true);
    assert.equal(d.isLocalDomain('sub.example.test'), false);
  });
});

describe('directory: expand', () => {
  let d: StoreDirectory;
  before(async () => {
    d = await fixture();
  });

  type Want = { local: [string, string?][]; remote: string[] } | null;
  const cases: [string, string, Want][] = [
    ['a user', 'alice@example.test', { local: [['alice@example.test']], remote: [] }],
    ['a subaddress keeps its detail', 'alice+tag@example.test', { local: [['alice@example.test', 'tag']], remote: [] }],
    ['an alias to two users', 'team@example.test', { local: [['alice@example.test'], ['bob@example.test']], remote: [] }],
    ['nested aliases, duplicates removed', 'list@example.test', { local: [['alice@example.test'], ['bob@example.test'], ['carol@example.org']], remote: ['x@remote.example'] }],
    ['a remote target keeps the case of its local part', 'fwd@example.test', { local: [], remote: ['Someone@remote.example'] }],
    ['an alias through its own address: keep a copy and forward', 'keep@example.test', { local: [['keep@example.test']], remote: ['archive@remote.example'] }],
    ['an alias to a subaddress', 'plus@example.test', { local: [['alice@example.test', 'fromalias']], remote: [] }],
    ['one copy per mailbox, the first detail wins', 'twice@example.test', { local: [['alice@example.test', 'x'], ['bob@example.test']], remote: [] }],
    ['a loop delivers nowhere', 'loop1@example.test', null],
    ['an unknown target is dropped', 'dangling@example.test', null],
    [`a chain within ${MAX_DEPTH} levels`, 'chain3@example.test', { local: [['alice@example.test']], remote: [] }],
    [`a chain deeper than ${MAX_DEPTH} is cut`, 'chain0@example.test', null],
    ['the catch-all', 'whoever@example.org', { local: [['carol@example.org']], remote: [] }],
    ['unknown', 'nobody@example.test', null],
    ['postmaster of the first domain, with nothing set up', 'postmaster@example.test', { local: [['postmaster@example.test']], remote: [] }],
    ['foreign is itself, remote', 'Ext@Remote.Example', { local: [], remote: ['Ext@remote.example'] }],
  ];
  for (const [name, input, want] of cases) {
    it(name, async () => {
      const got = await d.expand(input);
      if (want === null) return assert.equal(got, null);
      assert.ok(got);
      assert.deepEqual(
        got.local.map((l) => (l.detail === undefined ? [l.user] : [l.user, l.detail])),
        want.local,
      );
      assert.deepEqual(got.remote, want.remote);
    });
  }
});

describe('directory: postmaster (RFC 5321 §4.5.1)', () => {
  it('postmaster@ another local domain goes to the first domain\'s postmaster, and follows it when that is an alias or a user', async () => {
    const d = createDirectory({ store: createMemoryStore(), localDomains: ['first.test', 'other.test'], scrypt: FAST });
    await d.addUser('admin@first.test', 'pw');
    assert.deepEqual(await d.resolve('postmaster@other.test'), { kind: 'alias', targets: ['postmaster@first.test'] });
    assert.deepEqual((await d.expand('postmaster@other.test'))?.local.map((l) => l.user), ['postmaster@first.test']);
    await d.setAlias('postmaster@first.test', ['admin@first.test']);
    assert.deepEqual((await d.expand('postmaster@other.test'))?.local.map((l) => l.user), ['admin@first.test']);
    assert.deepEqual((await d.expand('postmaster@first.test'))?.local.map((l) => l.user), ['admin@first.test']);
    // An alias that leads back to the first domain's postmaster ends in its mailbox.
    await d.setAlias('postmaster@first.test', ['postmaster@other.test']);
    assert.deepEqual((await d.expand('postmaster@first.test'))?.local.map((l) => l.user), ['postmaster@first.test']);
    assert.deepEqual((await d.expand('postmaster@other.test'))?.local.map((l) => l.user), ['postmaster@first.test']);
    await d.addUser('postmaster@other.test', 'pw');
    assert.deepEqual(await d.resolve('postmaster@other.test'), { kind: 'local', user: 'postmaster@other.test' });
    assert.deepEqual(await d.resolve('postmaster@elsewhere.test'), { kind: 'foreign' });
  });
});

describe('directory: authenticate', () => {
  let d: StoreDirectory;
  before(async () => {
    d = await fixture();
  });

  const cases: [string, string, string | null][] = [
    ['alice@example.test', 'pw-alice', 'alice@example.test'],
    ['ALICE@Example.Test', 'pw-alice', 'alice@example.test'],
    ['alice@example.test', 'pw-bob', null],
    ['alice@example.test', 'PW-ALICE', null],
    ['alice@example.test', '', null],
    ['bob@example.test', 'pw-bob', 'bob@example.test'],
    ['nobody@example.test', 'pw-alice', null],
    ['nopw@example.test', '', null],
    ['nopw@example.test', 'anything', null],
    ['alice', 'pw-alice', null],
    ['alice@remote.example', 'pw-alice', null],
    ['team@example.test', 'pw-alice', null],
    ['alice+tag@example.test', 'pw-alice', null],
  ];
  for (const [user, pw, want] of cases) {
    it(`${user} / ${JSON.stringify(pw)} → ${want}`, async () => assert.equal(await d.authenticate(user, pw), want));
  }
});

describe('directory: changes', () => {
  const refused: [string, (d: StoreDirectory) => Promise<unknown>, DirectoryErrorCode][] = [
    ['a duplicate user, in any case', (d) => d.addUser('ALICE@example.test', 'x'), 'exists'],
    ['a user outside domains.local', (d) => d.addUser('eve@remote.example', 'x'), 'not-local'],
    ['an empty password on add', (d) => d.addUser('new@example.test', ''), 'empty-password'],
    ['an empty password on passwd', (d) => d.setPassword('alice@example.test', ''), 'empty-password'],
    ['a malformed address', (d) => d.addUser('not an address', 'x'), 'invalid-address'],
    ['a percent-hack address', (d) => d.addUser('a%remote.example@example.test', 'x'), 'invalid-address'],
    ['a quoted @', (d) => d.addUser('"a@b"@example.test', 'x'), 'invalid-address'],
    ['passwd of an unknown user', (d) => d.setPassword('nobody@example.test', 'x'), 'no-such-user'],
    ['an alias without targets', (d) => d.setAlias('empty@example.test', []), 'invalid-target'],
    ['an alias with a malformed target', (d) => d.setAlias('x@example.test', ['ok@example.test', 'bad target']), 'invalid-target'],
    ['an alias with a bang-path target', (d) => d.setAlias('x@example.test', ['host!user@example.test']), 'invalid-target'],
    ['an alias outside domains.local', (d) => d.setAlias('x@remote.example', ['alice@example.test']), 'not-local'],
    ['a catch-all outside domains.local', (d) => d.setCatchAll('remote.example', 'alice@example.test'), 'not-local'],
  ];
  for (const [name, op, code] of refused) {
    it(`refuses ${name} (${code})`, async () => {
      const d = await fixture();
      await assert.rejects(op(d), (e: unknown) => e instanceof DirectoryError && e.code === code && e.message.length > 0);
    });
  }

  it('addUser returns the canonical user and stores no hash without a password', async () => {
    const d = await fixture();
    const u = await d.addUser('New.User@Example.TEST', 'secret');
    assert.equal(u.address, 'new.user@example.test');
    assert.match(u.passwordHash!, /^scrypt\$/);
    assert.equal((await d.getUser('new.user@example.test'))?.address, 'new.user@example.test');
    assert.equal((await d.getUser('nopw@example.test'))?.passwordHash, undefined);
    assert.equal(await d.getUser('nobody@example.test'), null);
  });

  it('passwd replaces the password; del removes the user; list is sorted', async () => {
    const d = await fixture();
    await d.setPassword('Alice@example.test', 'new-pw');
    assert.equal(await d.authenticate('alice@example.test', 'pw-alice'), null);
    assert.equal(await d.authenticate('alice@example.test', 'new-pw'), 'alice@example.test');
    assert.equal(await d.deleteUser('ALICE@example.test'), true);
    assert.equal(await d.deleteUser('alice@example.test'), false);
    assert.deepEqual(await d.resolve('alice@example.test'), { kind: 'unknown' });
    assert.deepEqual(
      (await d.listUsers()).map((u) => u.address),
      ['bob@example.test', 'carol@example.org', 'keep@example.test', 'nopw@example.test'],
    );
  });

  it('aliases: set replaces, targets are de-duplicated, delete and catch-all removal work', async () => {
    const d = await fixture();
    await d.setAlias('team@example.test', ['carol@example.org', 'CAROL@example.org', 'R@remote.example']);
    assert.deepEqual(await d.getAlias('TEAM@example.test'), ['carol@example.org', 'R@remote.example']);
    assert.equal((await d.listAliases())['team@example.test']?.length, 2);
    assert.equal(await d.deleteAlias('team@example.test'), true);
    assert.equal(await d.deleteAlias('team@example.test'), false);
    assert.deepEqual(await d.resolve('team@example.test'), { kind: 'unknown' });
    await d.setCatchAll('example.org', null);
    assert.deepEqual(await d.resolve('anyone@example.org'), { kind: 'unknown' });
  });

  it('every change publishes on the "directory" channel', async () => {
    const store = createMemoryStore();
    const events: string[] = [];
    store.subscribe('directory', (ev) => events.push(JSON.parse(ev.message).op));
    const d = createDirectory({ store, localDomains: DOMAINS, scrypt: FAST });
    await d.addUser('a@example.test', 'x');
    await d.setPassword('a@example.test', 'y');
    await d.setAlias('b@example.test', ['a@example.test']);
    await d.deleteAlias('b@example.test');
    await d.setCatchAll('example.test', 'a@example.test');
    await d.deleteUser('a@example.test');
    await waitFor(() => events.length === 6, 'six events');
    assert.deepEqual(events, ['user.add', 'user.passwd', 'alias.set', 'alias.del', 'catchall.set', 'user.del']);
  });

  it('concurrent adds of one user: exactly one succeeds', async () => {
    const d = createDirectory({ store: createMemoryStore(), localDomains: DOMAINS, scrypt: FAST });
    const r = await Promise.allSettled([d.addUser('x@example.test', 'a'), d.addUser('X@example.test', 'b')]);
    assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1);
  });
});

describe('directory: cache follows changes made elsewhere', () => {
  const root = mkdtempSync(join(tmpdir(), 'postern-directory-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('a second directory (another process in effect) sees adds at once, and passwd/del after the event', async () => {
    // Two embedded stores on one data_dir behave as two processes (separate descriptors and locks).
    const dir = mkdtempSync(join(root, 'd-'));
    const sa = createEmbeddedStore(dir);
    const sb = createEmbeddedStore(dir);
    const daemon = createDirectory({ store: sa, localDomains: DOMAINS, scrypt: FAST });
    const cli = createDirectory({ store: sb, localDomains: DOMAINS, scrypt: FAST });
    try {
      await cli.addUser('dave@example.test', 'one');
      // A miss always asks the store: the new user is there at the next read.
      assert.equal(await daemon.authenticate('dave@example.test', 'one'), 'dave@example.test');
      assert.deepEqual(await daemon.resolve('dave@example.test'), { kind: 'local', user: 'dave@example.test' });
      // Cached now; a new password works at once (a failed check re-reads the user) …
      await cli.setPassword('dave@example.test', 'two');
      assert.equal(await daemon.authenticate('dave@example.test', 'two'), 'dave@example.test');
      // … and the old one stops working once the event has invalidated the cache.
      await waitFor(async () => (await daemon.authenticate('dave@example.test', 'one')) === null, 'the old password to fail', 2000);
      await cli.deleteUser('dave@example.test');
      await waitFor(async () => (await daemon.resolve('dave@example.test')).kind === 'unknown', 'the deletion', 2000);
      await cli.setAlias('dave@example.test', ['alice@example.test']);
      await waitFor(async () => (await daemon.resolve('dave@example.test')).kind === 'alias', 'the alias', 2000);
    } finally {
      daemon.close();
      cli.close();
      await sa.close();
      await sb.close();
    }
  });

  it('without the event a cached entry stays (the cache is real), and invalidate() drops it', async () => {
    const store = createMemoryStore();
    const d = createDirectory({ store, localDomains: DOMAINS, scrypt: FAST });
    await d.addUser('erin@example.test', 'x');
    assert.equal((await d.resolve('erin@example.test')).kind, 'local');
    await store.del('dir:user:erin@example.test'); // behind the directory's back, no event
    assert.equal((await d.resolve('erin@example.test')).kind, 'local');
    d.invalidate();
    assert.equal((await d.resolve('erin@example.test')).kind, 'unknown');
  });
});
