// rate-limit on both store drivers (embedded, and Redis at REDIS_URL): per client IP, auth user,
// sender domain and recipient; the sliding window (previous bucket weighted); 451 and 421 with
// 4.7.x; refused attempts not counted; exemptions; two nodes sharing counters. Time comes from a
// clock the test moves (no waiting).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import plugin, { createRateLimit } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { STORE_DRIVERS } from '../../test/helpers/stores.js';

const MIN = 60_000;
const HOUR = 60 * MIN;

function clock(start = Date.UTC(2026, 0, 1)) {
  const c = { t: start, now: () => c.t, advance: (ms: number) => void (c.t += ms) };
  return c;
}

it('options are validated with key paths', () => {
  // No limits of its own is fine: the plugin then uses the store's (REST /v1/policies/relay/rate-limits).
  assert.doesNotThrow(() => testPlugin(plugin, {}));
  assert.doesNotThrow(() => testPlugin(plugin, { limits: [] }));
  assert.throws(() => testPlugin(plugin, { store_key: 3 }), /rate-limit\.store_key/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'helo', max: 1, window: '1h' }] }), /rate-limit\.limits\.0\.key/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'client_ip', max: 0, window: '1h' }] }), /rate-limit\.limits\.0\.max/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'client_ip', max: 1, window: 'often' }] }), /rate-limit\.limits\.0\.window: expected a duration/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'client_ip', max: 1, window: '10ms' }] }), /rate-limit\.limits\.0\.window: window must be at least 1s/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'client_ip', max: 1, window: '1h', reply: 450 }] }), /rate-limit\.limits\.0\.reply/);
  assert.throws(() => testPlugin(plugin, { limits: [{ key: 'client_ip', max: 1, window: '1h' }], enhanced: '4.3.0' }), /rate-limit\.enhanced: expected a 4\.7\.x/);
});

for (const driver of STORE_DRIVERS) {
  describe(`rate-limit on the ${driver.name} store`, () => {
    const setup = async (options: Record<string, unknown>) => {
      const s = await driver.open();
      const c = clock();
      const h = testPlugin(createRateLimit(c.now), options, { store: s.store });
      h.newConnection({ remoteAddress: '192.0.2.10' });
      return {
        h,
        c,
        store: s.store,
        mail: (from = 'a@sender.example') => h.run('mail', { tx: { mailFrom: from } }),
        async close() {
          await h.close();
          await s.close();
        },
      };
    };

    it('a dry-run session is judged against the counts but spends none of the quota', async () => {
      const t = await setup({ limits: [{ key: 'client_ip', max: 1, window: '1h' }] });
      t.h.newConnection({ remoteAddress: '192.0.2.10', dryRun: true });
      for (let i = 0; i < 3; i++) assert.equal((await t.mail()).verdict.kind, 'next');
      t.h.newConnection({ remoteAddress: '192.0.2.10' });
      assert.equal((await t.mail()).verdict.kind, 'next', 'the real message still has its quota');
      assert.equal((await t.mail()).verdict.kind, 'tempfail');
      await t.close();
    });

    it('per client IP: max messages per window, then 451 4.7.0 naming the key; the window slides', async () => {
      const t = await setup({ limits: [{ key: 'client_ip', max: 3, window: '1h' }] });
      for (let i = 1; i <= 3; i++) {
        const r = await t.mail();
        assert.equal(r.verdict.kind, 'next');
        assert.equal(r.trace[0]!.detail, `within limits: client_ip 192.0.2.10 ${i}/3 per 1h`);
      }
      const over = await t.mail();
      assert.deepEqual(over.verdict, { kind: 'tempfail', code: 451, enhanced: '4.7.0', text: 'Rate limit exceeded (client_ip 192.0.2.10), try again later' });
      assert.equal(over.trace[0]!.detail, 'over the limit: client_ip 192.0.2.10 3/3 per 1h');
      // Another client has its own counter.
      t.h.newConnection({ remoteAddress: '192.0.2.11' });
      assert.equal((await t.mail()).verdict.kind, 'next');
      t.h.newConnection({ remoteAddress: '192.0.2.10' });
      // Next bucket, at its start: the previous one still counts in full.
      t.c.advance(HOUR);
      assert.equal((await t.mail()).verdict.kind, 'tempfail');
      // Half way: half of the previous bucket (3 → 1) counts, so two more pass.
      t.c.advance(30 * MIN);
      assert.equal((await t.mail()).verdict.kind, 'next');
      assert.equal((await t.mail()).verdict.kind, 'next');
      assert.equal((await t.mail()).verdict.kind, 'tempfail');
      t.c.advance(2 * HOUR);
      assert.equal((await t.mail()).verdict.kind, 'next');
      await t.close();
    });

    it('refused attempts are not counted', async () => {
      const t = await setup({ limits: [{ key: 'client_ip', max: 2, window: '1h' }] });
      await t.mail();
      await t.mail();
      for (let i = 0; i < 5; i++) assert.equal((await t.mail()).verdict.kind, 'tempfail');
      // 5 refusals later, the previous bucket still holds exactly 2: a quarter of it is 0.
      t.c.advance(HOUR + 45 * MIN);
      assert.equal((await t.mail()).verdict.kind, 'next');
      assert.equal((await t.mail()).verdict.kind, 'next');
      await t.close();
    });

    it('per auth user and per sender domain; a limit with nothing to count does not apply', async () => {
      const t = await setup({
        limits: [
          { key: 'auth_user', max: 2, window: '1d' },
          { key: 'sender_domain', max: 3, window: '1d' },
        ],
      });
      t.h.newConnection({ remoteAddress: '192.0.2.10', authUser: 'Alice@example.test', relaying: true });
      assert.equal((await t.mail('a@one.example')).verdict.kind, 'next');
      assert.equal((await t.mail('a@one.example')).verdict.kind, 'next');
      const r = await t.mail('a@two.example');
      assert.equal((r.verdict as { text: string }).text, 'Rate limit exceeded (auth_user alice@example.test), try again later');
      // Anonymous: only sender_domain applies (one.example has 2 of 3).
      t.h.newConnection({ remoteAddress: '192.0.2.10' });
      assert.equal((await t.mail('b@ONE.example')).verdict.kind, 'next');
      assert.match(((await t.mail('c@one.example')).verdict as { text: string }).text, /sender_domain one\.example/);
      // The null sender has no domain: not limited by sender_domain.
      for (let i = 0; i < 5; i++) assert.equal((await t.mail('')).verdict.kind, 'next');
      await t.close();
    });

    it('per recipient, at RCPT; 421 closes the connection; custom enhanced code and text', async () => {
      const t = await setup({ limits: [{ key: 'recipient', max: 2, window: '10m', reply: 421 }], enhanced: '4.7.28', text: 'Too much mail for {key} ({max} per {window})' });
      assert.equal((await t.mail()).verdict.kind, 'next', 'no limit at MAIL');
      const rcpt = (to: string) => t.h.run('rcpt', { rcpt: to });
      assert.equal((await rcpt('bob@example.test')).verdict.kind, 'next');
      assert.equal((await rcpt('BOB@example.test')).verdict.kind, 'next');
      assert.deepEqual((await rcpt('bob@example.test')).verdict, { kind: 'tempfail', code: 421, enhanced: '4.7.28', text: 'Too much mail for recipient bob@example.test (2 per 10m)', disconnect: true });
      assert.equal((await rcpt('carol@example.test')).verdict.kind, 'next');
      await t.close();
    });

    it('an attempt counts against every limit of its stage only when all allow it', async () => {
      const t = await setup({
        limits: [
          { key: 'client_ip', max: 10, window: '1h' },
          { key: 'sender_domain', max: 1, window: '1h' },
        ],
      });
      await t.mail('a@x.example');
      for (let i = 0; i < 3; i++) assert.equal((await t.mail('a@x.example')).verdict.kind, 'tempfail');
      const r = await t.mail('a@y.example');
      assert.equal(r.trace[0]!.detail, 'within limits: client_ip 192.0.2.10 2/10 per 1h; sender_domain y.example 1/1 per 1h');
      await t.close();
    });

    it('exempt clients are never limited', async () => {
      const t = await setup({ limits: [{ key: 'client_ip', max: 1, window: '1h' }], exempt_clients: ['192.0.2.0/24'] });
      for (let i = 0; i < 3; i++) assert.equal((await t.mail()).verdict.kind, 'next');
      t.h.newConnection({ remoteAddress: '198.51.100.1' });
      await t.mail();
      assert.equal((await t.mail()).verdict.kind, 'tempfail');
      await t.close();
    });

    it('two nodes on one store share the counters', async () => {
      const s = await driver.open();
      const c = clock();
      const opts = { limits: [{ key: 'client_ip', max: 2, window: '1h' }] };
      const a = testPlugin(createRateLimit(c.now), opts, { store: s.store });
      const b = testPlugin(createRateLimit(c.now), opts, { store: s.store });
      assert.equal((await a.run('mail')).verdict.kind, 'next');
      assert.equal((await b.run('mail')).verdict.kind, 'next');
      assert.equal((await a.run('mail')).verdict.kind, 'tempfail');
      assert.equal((await b.run('mail')).verdict.kind, 'tempfail');
      await a.close();
      await b.close();
      await s.close();
    });
  });
}
