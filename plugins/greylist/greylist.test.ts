// greylist on both store drivers (embedded, and Redis at REDIS_URL): first attempt deferred with
// 451 4.7.1, early retry deferred, retry after the delay accepted, retry window and expiry,
// /24 and /64 client networks, auto-allow after N passes, exemptions, and two nodes sharing one
// store. Time comes from a clock the test moves (no waiting).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import plugin, { clientNetwork, createGreylist } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { STORE_DRIVERS } from '../../test/helpers/stores.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

function clock(start = Date.UTC(2026, 0, 1)) {
  const c = { t: start, now: () => c.t, advance: (ms: number) => void (c.t += ms) };
  return c;
}

it('client networks: /24 and /64 by default, IPv4-mapped as IPv4', () => {
  assert.equal(clientNetwork('192.0.2.77', 24, 64), '192.0.2.0/24');
  assert.equal(clientNetwork('::ffff:192.0.2.77', 24, 64), '192.0.2.0/24');
  assert.equal(clientNetwork('2001:db8:1:2:aaaa::9', 24, 64), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('192.0.2.77', 32, 64), '192.0.2.77/32');
  assert.equal(clientNetwork('nonsense', 24, 64), null);
});

it('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { delay: 'soon' }), /greylist\.delay: expected a duration/);
  assert.throws(() => testPlugin(plugin, { delay: '3d', retry_window: '1d' }), /greylist\.delay: delay must be shorter than retry_window/);
  assert.throws(() => testPlugin(plugin, { ipv4_prefix: 33 }), /greylist\.ipv4_prefix/);
  assert.throws(() => testPlugin(plugin, { allow_clients: ['not-a-net'] }), /greylist\.allow_clients\.0: expected an IP address or CIDR/);
  assert.throws(() => testPlugin(plugin, { allow_senders: ['two words'] }), /greylist\.allow_senders\.0: expected an address/);
  assert.throws(() => testPlugin(plugin, { auto_allow_after: -1 }), /greylist\.auto_allow_after/);
});

for (const driver of STORE_DRIVERS) {
  describe(`greylist on the ${driver.name} store`, () => {
    const setup = async (options: Record<string, unknown> = {}) => {
      const s = await driver.open();
      const c = clock();
      const h = testPlugin(createGreylist(c.now), options, { store: s.store });
      h.newConnection({ remoteAddress: '192.0.2.10' });
      const rcpt = (to = 'rcpt@example.test', from = 'Sender@Remote.Example') => h.run('rcpt', { rcpt: to, tx: { mailFrom: from } });
      return {
        h,
        c,
        rcpt,
        store: s.store,
        async close() {
          await h.close();
          await s.close();
        },
      };
    };

    it('a dry-run session is judged but records no triplet', async () => {
      const t = await setup({ delay: '5m' });
      t.h.newConnection({ remoteAddress: '192.0.2.10', dryRun: true });
      const keys = async () => (await t.store.keys('greylist:')).sort();
      const r1 = await t.rcpt();
      assert.equal(r1.verdict.kind, 'tempfail');
      assert.deepEqual(await keys(), []);
      // Traffic from the same triplet is still a first attempt.
      t.h.newConnection({ remoteAddress: '192.0.2.10' });
      assert.match((await t.rcpt()).trace[0]!.detail ?? '', /new triplet/);
      assert.equal((await keys()).length, 1);
      await t.close();
    });

    it('first attempt 451 4.7.1; too early 451 again; after the delay accepted; then known', async () => {
      const t = await setup({ delay: '5m' });
      const r1 = await t.rcpt();
      assert.deepEqual(r1.verdict, { kind: 'tempfail', code: 451, enhanced: '4.7.1', text: 'Greylisted, please try again later' });
      assert.match(r1.trace[0]!.detail ?? '', /^greylisted \(new triplet\): 192\.0\.2\.0\/24, <sender@remote\.example>, <rcpt@example\.test>$/);
      t.c.advance(4 * MIN);
      const r2 = await t.rcpt();
      assert.equal(r2.verdict.kind, 'tempfail');
      assert.match(r2.trace[0]!.detail ?? '', /retried too early \(240s of 300s\)/);
      t.c.advance(2 * MIN);
      const r3 = await t.rcpt();
      assert.equal(r3.verdict.kind, 'next');
      assert.match(r3.trace[0]!.detail ?? '', /^passed: retried after 360s/);
      t.c.advance(10 * DAY);
      const r4 = await t.rcpt();
      assert.equal(r4.verdict.kind, 'next');
      assert.match(r4.trace[0]!.detail ?? '', /^passed: known triplet/);
      await t.close();
    });

    it('the triplet is what counts: another sender or recipient is greylisted; another host of the /24 is not', async () => {
      const t = await setup({ delay: '1m', auto_allow_after: 0 });
      await t.rcpt();
      t.c.advance(2 * MIN);
      assert.equal((await t.rcpt()).verdict.kind, 'next');
      assert.equal((await t.rcpt('other@example.test')).verdict.kind, 'tempfail');
      assert.equal((await t.rcpt('rcpt@example.test', 'someone@else.example')).verdict.kind, 'tempfail');
      t.h.newConnection({ remoteAddress: '192.0.2.200' });
      assert.equal((await t.rcpt()).verdict.kind, 'next', 'same /24');
      t.h.newConnection({ remoteAddress: '192.0.3.10' });
      assert.equal((await t.rcpt()).verdict.kind, 'tempfail', 'another /24');
      await t.close();
    });

    it('IPv6 clients are grouped by /64', async () => {
      const t = await setup({ delay: '1m' });
      t.h.newConnection({ remoteAddress: '2001:db8:1:2::10' });
      assert.equal((await t.rcpt()).verdict.kind, 'tempfail');
      t.c.advance(2 * MIN);
      t.h.newConnection({ remoteAddress: '2001:db8:1:2:ffff::1' });
      assert.equal((await t.rcpt()).verdict.kind, 'next');
      t.h.newConnection({ remoteAddress: '2001:db8:1:3::10' });
      assert.equal((await t.rcpt()).verdict.kind, 'tempfail');
      await t.close();
    });

    it('a retry after retry_window starts over; a passed triplet unseen past expiry starts over', async () => {
      const t = await setup({ delay: '5m', retry_window: '1h', expiry: '1d' });
      await t.rcpt();
      t.c.advance(2 * HOUR);
      const r = await t.rcpt();
      assert.equal(r.verdict.kind, 'tempfail');
      assert.match(r.trace[0]!.detail ?? '', /window over, new first attempt/);
      t.c.advance(10 * MIN);
      assert.equal((await t.rcpt()).verdict.kind, 'next');
      t.c.advance(2 * DAY);
      assert.equal((await t.rcpt()).verdict.kind, 'tempfail');
      await t.close();
    });

    it('auto-allow: after N accepted deliveries the client network skips greylisting', async () => {
      const t = await setup({ delay: '1m', auto_allow_after: 2 });
      await t.rcpt('a@example.test');
      t.c.advance(2 * MIN);
      assert.equal((await t.rcpt('a@example.test')).verdict.kind, 'next');
      assert.equal((await t.rcpt('b@example.test')).verdict.kind, 'tempfail', 'one pass is not enough');
      assert.equal((await t.rcpt('a@example.test')).verdict.kind, 'next');
      const r = await t.rcpt('c@example.test');
      assert.equal(r.verdict.kind, 'next');
      assert.equal(r.trace[0]!.detail, 'not greylisted: client network 192.0.2.0/24 auto-allowed');
      assert.equal(await t.store.get('greylist:a:192.0.2.0/24'), '1');
      await t.close();
    });

    it('skipped for trusted networks, authenticated users, allow-listed clients, senders and recipients', async () => {
      const t = await setup({ allow_clients: ['198.51.100.0/24'], allow_senders: ['friend@partner.example', 'trusted.example'], allow_recipients: ['postmaster@example.test'] });
      const cases: [session: Record<string, unknown>, to: string, from: string, why: string][] = [
        [{ relaying: true }, 'rcpt@example.test', 'a@remote.example', 'trusted or authenticated client'],
        [{ authUser: 'alice@example.test' }, 'rcpt@example.test', 'a@remote.example', 'trusted or authenticated client'],
        [{ remoteAddress: '198.51.100.9' }, 'rcpt@example.test', 'a@remote.example', 'allow_clients'],
        [{}, 'rcpt@example.test', 'Friend@Partner.Example', 'allow_senders'],
        [{}, 'rcpt@example.test', 'anyone@trusted.example', 'allow_senders'],
        [{}, 'postmaster@example.test', 'a@remote.example', 'allow_recipients'],
      ];
      for (const [session, to, from, why] of cases) {
        t.h.newConnection({ remoteAddress: '192.0.2.10', ...session });
        const r = await t.rcpt(to, from);
        assert.equal(r.verdict.kind, 'next', why);
        assert.equal(r.trace[0]!.detail, `not greylisted: ${why}`);
      }
      // Not on a list: greylisted (a sender of partner.example other than the listed address too).
      t.h.newConnection({ remoteAddress: '192.0.2.10' });
      assert.equal((await t.rcpt('rcpt@example.test', 'other@partner.example')).verdict.kind, 'tempfail');
      await t.close();
    });

    it('the null sender is a triplet of its own', async () => {
      const t = await setup({ delay: '1m' });
      assert.equal((await t.rcpt('rcpt@example.test', '')).verdict.kind, 'tempfail');
      t.c.advance(2 * MIN);
      assert.equal((await t.rcpt('rcpt@example.test', '')).verdict.kind, 'next');
      await t.close();
    });

    it('two nodes on one store share triplets', async () => {
      const s = await driver.open();
      const c = clock();
      const a = testPlugin(createGreylist(c.now), { delay: '1m' }, { store: s.store });
      const b = testPlugin(createGreylist(c.now), { delay: '1m' }, { store: s.store });
      assert.equal((await a.run('rcpt', { rcpt: 'r@example.test' })).verdict.kind, 'tempfail');
      c.advance(2 * MIN);
      assert.equal((await b.run('rcpt', { rcpt: 'r@example.test' })).verdict.kind, 'next', 'the retry reached the other node');
      await a.close();
      await b.close();
      await s.close();
    });
  });
}
