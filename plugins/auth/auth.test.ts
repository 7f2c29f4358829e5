// auth: verdicts, lockout per user and per client, tarpit delay, no username enumeration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import plugin, { clientKey } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';

const USERS = { 'alice@example.test': 'right-password', 'bob@example.test': 'bobs-password' };
const FAST = { delay: 0, max_delay: 0, window: '1m', lockout: '1m' };
const harness = (options: Record<string, unknown> = FAST) => testPlugin(plugin, options, { users: USERS });
const login = (username: string, password: string, remoteAddress = '192.0.2.10') => ({ auth: { username, password }, session: { remoteAddress } });

test('right password: accept, session gets authUser and may relay', async () => {
  const h = harness();
  const r = await h.run('auth', login('alice@example.test', 'right-password'));
  assert.deepEqual(r.verdict, { kind: 'accept' });
  assert.equal(h.session.authUser, 'alice@example.test');
  assert.equal(h.session.relaying, true);
  await h.close();
});

test('wrong password and unknown user get the identical 535 5.7.8 reply', async () => {
  const h = harness();
  const wrong = await h.run('auth', login('alice@example.test', 'nope'));
  const unknown = await h.run('auth', login('mallory@example.test', 'nope'));
  assert.deepEqual(wrong.verdict, { kind: 'reject', code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' });
  assert.deepEqual(unknown.verdict, wrong.verdict);
  assert.equal(h.session.authUser, undefined);
  assert.equal(h.session.relaying, false);
  await h.close();
});

test('after max_failures a username is locked, even with the right password; unknown users lock alike', async () => {
  const h = harness({ ...FAST, max_failures: 3 });
  for (const user of ['alice@example.test', 'ghost@example.test']) {
    for (let i = 0; i < 3; i++) assert.equal((await h.run('auth', login(user, `guess${i}`))).verdict.kind, 'reject');
  }
  const locked = await h.run('auth', login('alice@example.test', 'right-password'));
  assert.deepEqual(locked.verdict, { kind: 'tempfail', code: 454, enhanced: '4.7.0', text: 'Temporary authentication failure' });
  assert.equal(h.session.authUser, undefined);
  const ghost = await h.run('auth', login('ghost@example.test', 'whatever'));
  assert.deepEqual(ghost.verdict, locked.verdict, 'no enumeration through lock replies');
  // Case variants share the counter and the lock.
  assert.deepEqual((await h.run('auth', login('ALICE@Example.Test', 'right-password'))).verdict, locked.verdict);
  // Another user from the same client is not affected.
  assert.equal((await h.run('auth', login('bob@example.test', 'bobs-password'))).verdict.kind, 'accept');
  assert.ok((await h.store.ttl('auth:lock:user:alice@example.test')) > 0);
  await h.close();
});

test('the lock expires after `lockout`', async () => {
  const h = harness({ ...FAST, max_failures: 2, lockout: '150ms' });
  await h.run('auth', login('alice@example.test', 'x'));
  await h.run('auth', login('alice@example.test', 'y'));
  assert.equal((await h.run('auth', login('alice@example.test', 'right-password'))).verdict.kind, 'tempfail');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await h.run('auth', login('alice@example.test', 'right-password'))).verdict.kind, 'accept');
  await h.close();
});

test('a success resets the username counter', async () => {
  const h = harness({ ...FAST, max_failures: 3 });
  for (let round = 0; round < 3; round++) {
    await h.run('auth', login('alice@example.test', 'a'));
    await h.run('auth', login('alice@example.test', 'b'));
    assert.equal((await h.run('auth', login('alice@example.test', 'right-password'))).verdict.kind, 'accept', `round ${round}`);
  }
  await h.close();
});

test('per-client lock: many usernames from one client; IPv6 counted per /64', async () => {
  const h = harness({ ...FAST, max_failures: 100, max_failures_per_ip: 4 });
  for (let i = 0; i < 4; i++) await h.run('auth', login(`user${i}@example.test`, 'x', `2001:db8:1:2::${i + 1}`));
  // Same /64, other host: locked, right password or not.
  assert.equal((await h.run('auth', login('alice@example.test', 'right-password', '2001:db8:1:2::ffff'))).verdict.kind, 'tempfail');
  // Another /64 and another IPv4 client are fine.
  assert.equal((await h.run('auth', login('alice@example.test', 'right-password', '2001:db8:1:3::1'))).verdict.kind, 'accept');
  assert.equal((await h.run('auth', login('bob@example.test', 'bobs-password', '192.0.2.99'))).verdict.kind, 'accept');
  // A success does not reset the client counter.
  assert.ok(Number(await h.store.get('auth:fail:ip:2001:db8:1:2::/64')) >= 4);
  await h.close();
});

test('clientKey: IPv4, IPv4-mapped, IPv6 /64', () => {
  assert.equal(clientKey('192.0.2.1'), '192.0.2.1');
  assert.equal(clientKey('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(clientKey('2001:db8:0:1:aaaa::1'), '2001:db8:0:1::/64');
});

test('tarpit: the delay grows per failure up to max_delay; a success is not delayed', async () => {
  const h = harness({ delay: '40ms', max_delay: '100ms', max_failures: 50, window: '1m', lockout: '1m' });
  const timed = async (password: string) => {
    const t0 = performance.now();
    const r = await h.run('auth', login('alice@example.test', password));
    return { ms: performance.now() - t0, r };
  };
  const first = await timed('bad');
  const second = await timed('bad');
  const fourth = (await timed('bad'), await timed('bad'));
  assert.ok(first.ms >= 35 && first.ms < 90, `first ${first.ms}`);
  assert.ok(second.ms >= 75, `second ${second.ms}`);
  assert.ok(fourth.ms >= 95 && fourth.ms < 300, `capped ${fourth.ms}`);
  const ok = await timed('right-password');
  assert.equal(ok.r.verdict.kind, 'accept');
  assert.ok(ok.ms < 35, `success ${ok.ms}`);
  await h.close();
});

test('the tarpit wait is abortable by the hook signal (client gone)', async () => {
  const h = harness({ delay: '5s', max_delay: '5s', window: '1m', lockout: '1m' });
  const ctl = new AbortController();
  setTimeout(() => ctl.abort(new Error('client closed')), 30);
  const t0 = Date.now();
  const r = await h.run('auth', { ...login('alice@example.test', 'bad'), signal: ctl.signal });
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(r.verdict.kind, 'tempfail');
  assert.match(r.trace[0]!.detail ?? '', /client went away/);
  await h.close();
});

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { max_failures: 0 }), /auth\.max_failures/);
  assert.throws(() => testPlugin(plugin, { window: 'soon' }), /auth\.window: expected a duration/);
  assert.throws(() => testPlugin(plugin, { delay: '10s', max_delay: '1s' }), /auth\.delay: delay must not exceed max_delay/);
  assert.throws(() => testPlugin(plugin, { lockuot: '1m' }), /auth\.lockuot: unknown key/);
});
