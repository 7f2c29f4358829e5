// relay-acl: trusted networks (IPv4, IPv6, IPv4-mapped), and every relay trick from untrusted
// (rejected) and trusted/authenticated clients (not rejected), table-driven.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import plugin from './index.js';
import { RouteTable } from '../../src/delivery/routes.js';
import { inRanges, parseRange } from '../../src/address/cidr.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import type { SessionInfo } from '../../src/pipeline/plugin.js';
import { MemoryStore } from '../../src/store/memory.js';
import { failingStore } from '../../test/helpers/failing-store.js';

const GLOBAL = {
  domains: { local: ['local.test', 'xn--bcher-kva.test'] },
  relay: { networks: ['127.0.0.0/8', '::1/128', '10.1.0.0/16', '2001:db8:aa::/48'] },
  routes: { 'corp.test': 'smtp://10.0.0.5:25', '.sub.corp.test': 'smtp://10.0.0.6:25' },
};

const harness = (options: Record<string, unknown> = {}) => testPlugin(plugin, options, { global: GLOBAL });

test('connect: trusted networks set relaying, others do not (IPv4, IPv6, IPv4-mapped)', async () => {
  const h = harness({ networks: ['198.51.100.0/24', '2001:db8:ff::7'] });
  const cases: [string, boolean][] = [
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::ffff:127.0.0.1', true],
    ['::FFFF:10.1.200.3', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['2001:db8:aa:1::5', true],
    ['2001:db8:ab::5', false],
    ['10.2.0.1', false],
    ['198.51.100.77', true],
    ['::ffff:198.51.100.77', true],
    ['2001:db8:ff::7', true],
    ['2001:db8:ff::8', false],
    ['192.0.2.1', false],
    ['::ffff:192.0.2.1', false],
    ['not-an-ip', false],
  ];
  for (const [ip, trusted] of cases) {
    h.newConnection({ remoteAddress: ip });
    const r = await h.run('connect');
    assert.equal(r.verdict.kind, 'next', ip);
    assert.equal(h.session.relaying, trusted, ip);
  }
  await h.close();
});

test('networks written at run time into the store count from the next connection', async () => {
  const h = harness();
  h.newConnection({ remoteAddress: '203.0.113.9' });
  await h.run('connect');
  assert.equal(h.session.relaying, false);
  await h.store.hset('policy:relay:networks', 'n1', '203.0.113.0/24');
  await h.store.hset('policy:relay:networks', 'bad', 'garbage');
  h.newConnection({ remoteAddress: '203.0.113.9' });
  await h.run('connect');
  assert.equal(h.session.relaying, true);
  await h.close();
});

test('IPv4-mapped ranges match IPv4 clients', () => {
  assert.equal(inRanges('192.0.2.5', [parseRange('::ffff:192.0.2.0/120')]), true);
  assert.equal(inRanges('192.0.3.5', [parseRange('::ffff:192.0.2.0/120')]), false);
  assert.throws(() => parseRange('10.0.0.0/33'));
});

// [rcpt, untrusted verdict, trusted verdict]
const RCPT_CASES: [string, 'reject' | 'next' | 'accept', 'next' | 'accept'][] = [
  // Every trick: refused from an untrusted client.
  ['user%evil.example@local.test', 'reject', 'next'],
  ['"user@evil.example"@local.test', 'reject', 'next'],
  ['@local.test:user@evil.example', 'reject', 'accept'],
  ['evil.example!user@local.test', 'reject', 'next'],
  ['user@[192.0.2.1]', 'reject', 'accept'],
  ['User%Evil.Example@LOCAL.TEST', 'reject', 'next'],
  ['"USER%evil"@Local.Test', 'reject', 'next'],
  ['@Local.Test,@other.test:USER@Evil.Example', 'reject', 'accept'],
  ['user@[IPv6:2001:db8::1]', 'reject', 'accept'],
  // Foreign domains, however written.
  ['user@evil.example.', 'reject', 'accept'],
  ['user@evil.example', 'reject', 'accept'],
  ['USER@EVIL.EXAMPLE', 'reject', 'accept'],
  ['user@local.test.evil.example', 'reject', 'accept'],
  ['user@évil.example', 'reject', 'accept'],
  // Local domains: the core checks the mailbox.
  ['user@local.test', 'next', 'next'],
  ['USER@LOCAL.TEST', 'next', 'next'],
  ['user@local.test.', 'next', 'next'],
  ['用户@local.test', 'next', 'next'],
  ['user@bücher.test', 'next', 'next'],
  ['user@BÜCHER.test', 'next', 'next'],
  // Routed domains: we are their front end.
  ['user@corp.test', 'accept', 'accept'],
  ['user@a.sub.corp.test', 'accept', 'accept'],
  ['user@sub.corp.test', 'reject', 'accept'],
];

for (const who of ['untrusted', 'trusted network', 'authenticated'] as const) {
  test(`rcpt from ${who}: every trick and domain kind`, async () => {
    const h = harness();
    const session: Partial<SessionInfo> =
      who === 'trusted network' ? { remoteAddress: '::ffff:127.0.0.1' } : { remoteAddress: '192.0.2.1', authUser: who === 'authenticated' ? 'alice@local.test' : undefined };
    for (const [rcpt, untrusted, trusted] of RCPT_CASES) {
      h.newConnection(session);
      await h.run('connect');
      const r = await h.run('rcpt', { rcpt });
      const want = who === 'untrusted' ? untrusted : trusted;
      assert.equal(r.verdict.kind, want, `${who}: ${rcpt}`);
      if (r.verdict.kind === 'reject') {
        assert.deepEqual([r.verdict.code, r.verdict.enhanced, r.verdict.text], [554, '5.7.1', 'Relay access denied'], rcpt);
      }
    }
    await h.close();
  });
}

const UNAVAILABLE = 'tempfail 451 4.3.0 Relay policy unavailable, try again later';
const NETWORKS = 'policy:relay:networks';
const DOMAINS = 'policy:relay:domains';
const ROUTES = 'policy:relay:routes';

/** The verdict for one recipient in a new connection from `ip`. */
async function rcptVerdict(h: ReturnType<typeof harness>, ip: string, rcpt: string) {
  h.newConnection({ remoteAddress: ip });
  await h.run('connect');
  const r = await h.run('rcpt', { rcpt });
  // relay-acl's own tempfail carries its text; a throw would be the runner's "Policy check unavailable".
  if (r.verdict.kind === 'tempfail') return `tempfail ${r.verdict.code} ${r.verdict.enhanced} ${r.verdict.text}`;
  return r.verdict.kind === 'reject' ? `reject ${r.verdict.code} ${r.verdict.enhanced}` : r.verdict.kind;
}

test('a run-time list the store cannot read turns a relay refusal into 451 4.3.0, never 554', async () => {
  for (const key of [NETWORKS, DOMAINS, ROUTES]) {
    const down = new Set<string>();
    const store = failingStore(down);
    const h = testPlugin(plugin, {}, { global: GLOBAL, store });
    await store.hset(NETWORKS, 'n1', '203.0.113.0/24');
    await store.hset(DOMAINS, 'backup.test', '1');
    down.add(key);
    // What that list would have allowed is not refused for good, nor is any other foreign recipient.
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@elsewhere.test'), UNAVAILABLE, key);
    if (key === NETWORKS) assert.equal(await rcptVerdict(h, '203.0.113.9', 'x@elsewhere.test'), UNAVAILABLE, key);
    if (key === DOMAINS) assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@backup.test'), UNAVAILABLE, key);
    // Mail the configured policy decides is unaffected.
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@local.test'), 'next', key);
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@corp.test'), 'accept', key);
    assert.equal(await rcptVerdict(h, '10.1.2.3', 'x@elsewhere.test'), 'accept', key);
    // A routing trick is refused for good unless the client might be trusted by the unread networks.
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x%elsewhere.test@local.test'), key === NETWORKS ? UNAVAILABLE : 'reject 554 5.7.1', key);
    // Readable again: the lists decide, and the refusal is permanent.
    down.clear();
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@elsewhere.test'), 'reject 554 5.7.1', key);
    assert.equal(await rcptVerdict(h, '203.0.113.9', 'x@elsewhere.test'), 'accept', key);
    assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@backup.test'), 'accept', key);
    await h.close();
  }
});

test('trusted networks unreadable at connect are read again at RCPT: a client in them relays', async () => {
  const down = new Set([NETWORKS]);
  const store = failingStore(down);
  const h = testPlugin(plugin, {}, { global: GLOBAL, store });
  await store.hset(NETWORKS, 'n1', '203.0.113.0/24');
  h.newConnection({ remoteAddress: '203.0.113.9' });
  await h.run('connect');
  assert.equal(h.session.relaying, false);
  down.clear();
  const r = await h.run('rcpt', { rcpt: 'x@elsewhere.test' });
  assert.equal(r.verdict.kind, 'accept');
  assert.equal(h.session.relaying, true);
  await h.close();
});

test('routes read once stand in while the store cannot be read', async () => {
  const down = new Set<string>();
  const store = failingStore(down);
  await store.hset(ROUTES, 'partner.test', JSON.stringify({ domain: 'partner.test', nexthop: 'smtp://10.0.0.9:25' }));
  const h = testPlugin(plugin, {}, { global: GLOBAL, store });
  assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@partner.test'), 'accept');
  down.add(ROUTES);
  assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@partner.test'), 'accept', 'the last good routes');
  assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@elsewhere.test'), 'reject 554 5.7.1', 'they are known: no route there');
  await h.close();
});

test('an access list the store cannot read: 451 4.3.0 at MAIL and RCPT; its deny entries are not skipped', async () => {
  for (const [stage, key] of [['mail', 'policy:access:senders'], ['rcpt', 'policy:access:recipients']] as const) {
    const h = testPlugin(plugin, {}, { global: GLOBAL, store: failingStore(new Set([key])) });
    h.newConnection({ remoteAddress: '10.1.2.3' });
    await h.run('connect');
    const r = await h.run(stage, { tx: { mailFrom: 'a@sender.test' }, rcpt: 'x@local.test' });
    assert.deepEqual(r.verdict.kind === 'tempfail' && [r.verdict.code, r.verdict.enhanced, r.verdict.text], [451, '4.3.0', 'Relay policy unavailable, try again later'], key);
    await h.close();
  }
});

test('on_error: fail-open is refused: a later plugin would relay while relay-acl fails', async () => {
  assert.throws(() => testPlugin(plugin, { on_error: 'fail-open' }, { global: GLOBAL }), /relay-acl\.on_error: relay-acl cannot fail open: while it fails, a later plugin's accept at RCPT would relay for anyone/);
  await testPlugin(plugin, { on_error: 'tempfail' }, { global: GLOBAL }).close();
});

test('a store that rejects with no error at all still gives 451, not 554', async () => {
  const store = new MemoryStore();
  store.hgetall = () => Promise.reject(undefined);
  store.hget = () => Promise.reject(undefined);
  const h = testPlugin(plugin, { sender_access_key: '', recipient_access_key: '' }, { global: GLOBAL, store });
  assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@elsewhere.test'), UNAVAILABLE);
  await h.close();
});

test('a routing trick from a client trusted only by the run-time networks: 451 while they cannot be read, then relayed', async () => {
  const down = new Set<string>();
  const store = failingStore(down);
  await store.hset(NETWORKS, 'n1', '203.0.113.0/24');
  const h = testPlugin(plugin, {}, { global: GLOBAL, store });
  down.add(NETWORKS);
  for (const rcpt of ['x%elsewhere.test@local.test', 'x@[192.0.2.1]']) {
    assert.equal(await rcptVerdict(h, '203.0.113.9', rcpt), UNAVAILABLE, rcpt);
    assert.equal(await rcptVerdict(h, '198.51.100.1', rcpt), UNAVAILABLE, `${rcpt}: anyone, while unknown`);
  }
  down.clear();
  assert.equal(await rcptVerdict(h, '203.0.113.9', 'x@[192.0.2.1]'), 'accept');
  assert.equal(await rcptVerdict(h, '198.51.100.1', 'x@[192.0.2.1]'), 'reject 554 5.7.1');
  await h.close();
});

test('malformed recipients get 553 5.1.3 whoever asks', async () => {
  const h = harness();
  for (const rcpt of ['no-at-sign', 'a@b@c', 'user@exa mple.test', '"open@local.test', 'user@[999.1.1.1]']) {
    const r = await h.run('rcpt', { rcpt });
    assert.equal(r.verdict.kind, 'reject', rcpt);
    assert.equal(r.verdict.kind === 'reject' && r.verdict.code, 553, rcpt);
  }
  await h.close();
});

test('a bad relay network in the global config is a config error with its key path', () => {
  assert.throws(() => testPlugin(plugin, {}, { global: { relay: { networks: ['10.0.0.0/8', '300.0.0.0/8'] } } }), /relay\.networks\.1: expected an address or CIDR/);
});

test('bad extra network fails option validation with its key path', () => {
  assert.throws(() => testPlugin(plugin, { networks: ['10.0.0.0/8', 'nope'] }), /relay-acl\.networks\.1: expected an IP address or CIDR/);
});

test('RouteTable: exact and subdomain keys', () => {
  const route = { nexthop: 'smtp://10.0.0.5:25', mode: 'queue' as const, verify: 'none' as const };
  const t = (keys: string[]) => new RouteTable(Object.fromEntries(keys.map((k) => [k, route])));
  assert.equal(t(['corp.test']).has('corp.test'), true);
  assert.equal(t(['Corp.Test.']).has('CORP.test'), true);
  assert.equal(t(['corp.test']).has('x.corp.test'), false);
  assert.equal(t(['.corp.test']).has('x.corp.test'), true);
  assert.equal(t(['.corp.test']).has('corp.test'), false);
  assert.equal(t(['.corp.test']).has('evilcorp.test'), false);
  assert.deepEqual(t(['.test', '.corp.test']).find('a.corp.test')?.key, '.corp.test');
});
