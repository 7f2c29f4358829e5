// rate-limit's client_ip key per network: IPv6 clients are counted per /64 by default (RFC 6177: a
// site is given at least a /64, so one sender holds all of it), IPv4 clients per address; both
// prefix lengths are configurable. The key function is checked on its own (table), then through
// the plugin: two addresses of one /64 share a counter, another /64 has its own.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import plugin, { clientKey, createRateLimit } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';

const cases: [ip: string, v4: number, v6: number, key: string | null][] = [
  ['192.0.2.10', 32, 64, '192.0.2.10'],
  ['::ffff:192.0.2.10', 32, 64, '192.0.2.10'],
  ['192.0.2.10', 24, 64, '192.0.2.0/24'],
  ['2001:db8:1:2::1', 32, 64, '2001:db8:1:2::/64'],
  ['2001:db8:1:2:ffff:eeee:dddd:cccc', 32, 64, '2001:db8:1:2::/64'],
  ['2001:DB8:1:2::1', 32, 64, '2001:db8:1:2::/64'],
  ['2001:db8:1:2::1', 32, 48, '2001:db8:1::/48'],
  ['2001:db8:1:2::1', 32, 128, '2001:db8:1:2::1'],
  ['::1', 32, 64, '::/64'],
  ['not-an-address', 32, 64, null],
  ['', 32, 64, null],
];

it('clientKey: the address at /32 and /128, else the network', () => {
  for (const [ip, v4, v6, key] of cases) assert.equal(clientKey(ip, v4, v6), key, `${ip} /${v4} /${v6}`);
});

const limits = [{ key: 'client_ip', max: 2, window: '1h' }];

async function mailFrom(h: ReturnType<typeof testPlugin>, ip: string) {
  h.newConnection({ remoteAddress: ip });
  return h.run('mail', { tx: { mailFrom: 'a@sender.example' } });
}

it('two addresses in one /64 share a counter; an address of another /64 has its own', async () => {
  const t0 = Date.UTC(2026, 0, 1);
  const h = testPlugin(createRateLimit(() => t0), { limits });
  assert.equal((await mailFrom(h, '2001:db8:1:2::1')).trace[0]!.detail, 'within limits: client_ip 2001:db8:1:2::/64 1/2 per 1h');
  assert.equal((await mailFrom(h, '2001:db8:1:2::99')).trace[0]!.detail, 'within limits: client_ip 2001:db8:1:2::/64 2/2 per 1h');
  const over = await mailFrom(h, '2001:db8:1:2:aaaa::7');
  assert.deepEqual(over.verdict, { kind: 'tempfail', code: 451, enhanced: '4.7.0', text: 'Rate limit exceeded (client_ip 2001:db8:1:2::/64), try again later' });
  assert.equal((await mailFrom(h, '2001:db8:1:3::1')).verdict.kind, 'next', 'the next /64 is another client');
  await h.close();
});

it('ipv6_prefix 128 counts each address; ipv4_prefix 24 counts a whole /24', async () => {
  const t0 = Date.UTC(2026, 0, 1);
  const v6 = testPlugin(createRateLimit(() => t0), { limits, ipv6_prefix: 128 });
  for (let i = 0; i < 3; i++) assert.equal((await mailFrom(v6, `2001:db8::${i + 1}`)).verdict.kind, 'next');
  await v6.close();
  const v4 = testPlugin(createRateLimit(() => t0), { limits, ipv4_prefix: 24 });
  assert.equal((await mailFrom(v4, '192.0.2.1')).verdict.kind, 'next');
  assert.equal((await mailFrom(v4, '192.0.2.2')).verdict.kind, 'next');
  const over = await mailFrom(v4, '192.0.2.3');
  assert.equal(over.verdict.kind, 'tempfail');
  assert.equal(over.trace[0]!.detail, 'over the limit: client_ip 192.0.2.0/24 2/2 per 1h');
  await v4.close();
});

it('prefix options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { limits, ipv4_prefix: 33 }), /rate-limit\.ipv4_prefix/);
  assert.throws(() => testPlugin(plugin, { limits, ipv4_prefix: 4 }), /rate-limit\.ipv4_prefix/);
  assert.throws(() => testPlugin(plugin, { limits, ipv6_prefix: 129 }), /rate-limit\.ipv6_prefix/);
  assert.throws(() => testPlugin(plugin, { limits, ipv6_prefix: '64' }), /rate-limit\.ipv6_prefix/);
  assert.throws(() => testPlugin(plugin, { limits, ipv6_prefix: 64.5 }), /rate-limit\.ipv6_prefix/);
});
