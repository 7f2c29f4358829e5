// dnsbl against a real resolver and the loopback test DNS server: listings, answer filters,
// IPv6 nibble queries, parallel zones, the store cache, timeouts, exemptions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import plugin, { reverseName } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { startDnsServer, type DnsServerOptions, type RunningDnsServer } from '../../test/helpers/dns-server.js';
import { MemoryStore } from '../../src/store/memory.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { DNSBL_ZONES_KEY } from '../../src/policy/dnsbl.js';

const V6 = '2001:db8::99';
const V6_REV = '9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2';

async function withDns(fn: (dns: RunningDnsServer) => Promise<void>, behaviour?: DnsServerOptions['behaviour']) {
  const dns = await startDnsServer({
    records: {
      // RFC 5782 §5: the 127.0.0.2 test entry.
      '2.0.0.127.bl.test': { A: ['127.0.0.2'] },
      '99.2.0.192.bl.test': { A: ['127.0.0.2'], TXT: ['listed for testing'] },
      '99.2.0.192.other.test': { A: ['127.0.0.4'] },
      '98.2.0.192.bl.test': { A: ['127.255.255.254'] },
      '97.2.0.192.bl.test': { A: ['127.0.0.1'] },
      '96.2.0.192.bl.test': { A: ['192.0.2.1'] },
      [`${V6_REV}.bl6.test`]: { A: ['127.0.0.2'] },
      // ::1 (RFC 5782 §5 IPv6 test entry).
      [`1${'.0'.repeat(31)}.bl6.test`]: { A: ['127.0.0.2'] },
    },
    behaviour,
  });
  try {
    await fn(dns);
  } finally {
    await dns.stop();
  }
}

function capture() {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

test('reverseName: IPv4, IPv4-mapped, IPv6 nibbles (RFC 5782 §2.1, §2.4)', () => {
  assert.equal(reverseName('192.0.2.99'), '99.2.0.192');
  assert.equal(reverseName('::ffff:192.0.2.99'), '99.2.0.192');
  assert.equal(reverseName('2001:db8:1:2:3:4:567:89ab'), 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2');
  assert.equal(reverseName('::1'), `1${'.0'.repeat(31)}`);
  assert.equal(reverseName('not an ip'), null);
});

test('a listed client is refused at connect with the zone named; an unlisted one passes', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl.test'] }, { dnsServers: [dns.server] });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    const r = await h.run('connect');
    assert.deepEqual(r.verdict, { kind: 'reject', code: 554, enhanced: '5.7.1', text: 'Service unavailable; client [192.0.2.99] blocked using bl.test' });
    h.newConnection({ remoteAddress: '192.0.2.50' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    h.newConnection({ remoteAddress: '127.0.0.2' });
    assert.equal((await h.run('connect')).verdict.kind, 'reject');
    await h.close();
  }));

test('IPv6 clients are looked up by nibbles', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl6.test'] }, { dnsServers: [dns.server] });
    for (const ip of [V6, '::1']) {
      h.newConnection({ remoteAddress: ip });
      const r = await h.run('connect');
      assert.equal(r.verdict.kind, 'reject', ip);
      assert.match(r.verdict.kind === 'reject' ? r.verdict.text : '', new RegExp(`client \\[${ip.replace(/[.:]/g, '\\$&')}\\] blocked using bl6\\.test`));
    }
    assert.equal(dns.count(`${V6_REV}.bl6.test`), 1);
    h.newConnection({ remoteAddress: '2001:db8::98' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    await h.close();
  }));

test('which answers count: default rule and explicit answers', () =>
  withDns(async (dns) => {
    const cases: [options: Record<string, unknown>, ip: string, listed: boolean][] = [
      [{ zones: ['bl.test'] }, '192.0.2.99', true],
      [{ zones: ['bl.test'] }, '192.0.2.98', false], // 127.255.255.254: "query refused", not a listing
      [{ zones: ['bl.test'] }, '192.0.2.97', false], // 127.0.0.1 never lists (RFC 5782 §5)
      [{ zones: ['bl.test'] }, '192.0.2.96', false], // outside 127/8
      [{ zones: [{ zone: 'bl.test', answers: ['127.0.0.4'] }] }, '192.0.2.99', false],
      [{ zones: [{ zone: 'other.test', answers: ['127.0.0.4'] }] }, '192.0.2.99', true],
      [{ zones: [{ zone: 'bl.test', answers: ['127.0.0.0/24'] }] }, '192.0.2.99', true],
      [{ zones: [{ zone: 'bl.test', answers: ['127.255.255.0/24'] }] }, '192.0.2.98', true],
    ];
    for (const [options, ip, listed] of cases) {
      const h = testPlugin(plugin, options, { dnsServers: [dns.server] });
      h.newConnection({ remoteAddress: ip });
      assert.equal((await h.run('connect')).verdict.kind, listed ? 'reject' : 'next', `${JSON.stringify(options)} ${ip}`);
      await h.close();
    }
  }));

test('zones are queried in parallel; the first listing zone in config order decides', () =>
  withDns(
    async (dns) => {
      const h = testPlugin(plugin, { zones: ['slow.test', 'other.test', 'bl.test'] }, { dnsServers: [dns.server] });
      h.newConnection({ remoteAddress: '192.0.2.99' });
      const t0 = Date.now();
      const r = await h.run('connect');
      const ms = Date.now() - t0;
      assert.ok(ms >= 140 && ms < 400, `took ${ms}ms`);
      assert.match(r.verdict.kind === 'reject' ? r.verdict.text : '', /blocked using other\.test$/);
      await h.close();
    },
    () => ({ delayMs: 150 }), // every zone answers late: serial would take 450ms
  ));

test('answers are cached in the store, listed and not listed (query log shows one query each)', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl.test'], cache_ttl: '1m' }, { dnsServers: [dns.server] });
    for (let i = 0; i < 3; i++) {
      h.newConnection({ remoteAddress: '192.0.2.99' });
      assert.equal((await h.run('connect')).verdict.kind, 'reject');
      h.newConnection({ remoteAddress: '192.0.2.50' });
      assert.equal((await h.run('connect')).verdict.kind, 'next');
    }
    assert.equal(dns.count('99.2.0.192.bl.test'), 1);
    assert.equal(dns.count('50.2.0.192.bl.test'), 1);
    assert.equal(await h.store.get('dnsbl:bl.test:99.2.0.192'), '127.0.0.2');
    assert.equal(await h.store.get('dnsbl:bl.test:50.2.0.192'), '');
    const ttl = await h.store.ttl('dnsbl:bl.test:50.2.0.192');
    assert.ok(ttl > 50_000 && ttl <= 60_000);
    await h.close();
  }));

test('the cache expires after cache_ttl', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl.test'], cache_ttl: '100ms' }, { dnsServers: [dns.server] });
    await h.run('connect', { session: { remoteAddress: '192.0.2.99' } });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    await new Promise((r) => setTimeout(r, 150));
    await h.run('connect');
    assert.equal(dns.count('99.2.0.192.bl.test'), 2);
    await h.close();
  }));

test('a zone that does not answer in time is not a listing, is logged, and is not cached', () =>
  withDns(
    async (dns) => {
      const { log, lines } = capture();
      const h = testPlugin(plugin, { zones: ['dead.test', 'bl.test'], dns_timeout: '150ms' }, { dnsServers: [dns.server], dnsTimeoutMs: 300, log });
      h.newConnection({ remoteAddress: '192.0.2.50' });
      const t0 = Date.now();
      const r = await h.run('connect');
      assert.equal(r.verdict.kind, 'next');
      assert.ok(Date.now() - t0 < 280, 'bounded by dns_timeout');
      assert.ok(lines.some((l) => l.evt === 'plugin.dnsbl.error' && l.zone === 'dead.test'));
      assert.equal(await h.store.get('dnsbl:dead.test:50.2.0.192'), null);
      // A dead zone does not hide a listing elsewhere.
      h.newConnection({ remoteAddress: '192.0.2.99' });
      assert.match(((await h.run('connect')).verdict as { text: string }).text, /bl\.test/);
      // SERVFAIL: same.
      h.newConnection({ remoteAddress: '192.0.2.51' });
      dns.setBehaviour((name) => (name.endsWith('dead.test') ? 'servfail' : 'answer'));
      assert.equal((await h.run('connect')).verdict.kind, 'next');
      await h.close();
    },
    (name) => (name.endsWith('dead.test') ? 'drop' : 'answer'),
  ));

test('trusted and authenticated clients are not checked', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl.test'] }, { dnsServers: [dns.server] });
    h.newConnection({ remoteAddress: '192.0.2.99', relaying: true });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    h.newConnection({ remoteAddress: '192.0.2.99', authUser: 'alice@example.test' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    assert.equal(dns.queries.length, 0);
    await h.close();
  }));

test('stage rcpt: nothing at connect, refused at rcpt, one lookup per transaction', () =>
  withDns(async (dns) => {
    const h = testPlugin(plugin, { zones: ['bl.test'], stage: 'rcpt', reject_code: 550, reject_text: 'Blocked by {zone} ({ip})' }, { dnsServers: [dns.server] });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    assert.equal(dns.queries.length, 0);
    const r1 = await h.run('rcpt', { rcpt: 'a@example.test' });
    const r2 = await h.run('rcpt', { rcpt: 'b@example.test' });
    assert.deepEqual(r1.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Blocked by bl.test (192.0.2.99)' });
    assert.deepEqual(r2.verdict, r1.verdict);
    assert.equal(dns.queries.length, 1);
    await h.close();
  }));

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { zones: 'bl.test' }), /dnsbl\.zones: .*expected (an? )?(array|list)/);
  // No zones of its own is fine: the plugin then uses the store's (REST /v1/dnsbl/zones).
  assert.doesNotThrow(() => testPlugin(plugin, {}));
  assert.throws(() => testPlugin(plugin, { score_threshold: 0 }), /dnsbl\.score_threshold/);
  assert.throws(() => testPlugin(plugin, { zones: [{ zone: 'bl.test', answers: ['nope'] }] }), /dnsbl\.zones\.0\.answers\.0: expected an IPv4/);
  assert.throws(() => testPlugin(plugin, { zones: ['bl.test'], stage: 'data' }), /dnsbl\.stage/);
  assert.throws(() => testPlugin(plugin, { zones: ['bl.test'], reject_text: 'a\r\n250 ok' }), /dnsbl\.reject_text: must be one line/);
  assert.throws(() => testPlugin(plugin, { zones: ['bad zone'] }), /dnsbl\.zones\.0/);
});

// Zones from the store (src/policy/dnsbl.ts, written by REST /v1/dnsbl/zones), read on every check.
const putZone = (store: import('../../src/store/store.js').Store, z: Record<string, unknown>) =>
  store.hset(DNSBL_ZONES_KEY, String(z.zone), JSON.stringify({ action: 'reject-connect', updated_at: new Date().toISOString(), ...z }));

test('store zones: reject-connect refuses at connect; reject-rcpt at RCPT; a change applies to the next connection', () =>
  withDns(async (dns) => {
    const store = new MemoryStore();
    const h = testPlugin(plugin, {}, { dnsServers: [dns.server], store });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    await putZone(store, { zone: 'bl.test' });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.deepEqual((await h.run('connect')).verdict, { kind: 'reject', code: 554, enhanced: '5.7.1', text: 'Service unavailable; client [192.0.2.99] blocked using bl.test' });
    await putZone(store, { zone: 'bl.test', action: 'reject-rcpt' });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    assert.equal((await h.run('rcpt', { rcpt: 'a@example.test' })).verdict.kind, 'reject');
    await store.hdel(DNSBL_ZONES_KEY, 'bl.test');
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('rcpt', { rcpt: 'a@example.test' })).verdict.kind, 'next');
    await h.close();
  }));

test('store zones: answers as addresses, CIDR and from-to ranges; a store zone replaces a configured one of its name', () =>
  withDns(async (dns) => {
    const store = new MemoryStore();
    const h = testPlugin(plugin, { zones: ['other.test'] }, { dnsServers: [dns.server], store });
    const connect = async () => {
      h.newConnection({ remoteAddress: '192.0.2.99' });
      return (await h.run('connect')).verdict.kind;
    };
    assert.equal(await connect(), 'reject'); // other.test answers 127.0.0.4
    await putZone(store, { zone: 'other.test', answers: ['127.0.0.2-127.0.0.3', '127.0.0.10'] });
    assert.equal(await connect(), 'next');
    await putZone(store, { zone: 'other.test', answers: ['127.0.0.2-127.0.0.11'] });
    assert.equal(await connect(), 'reject');
    await putZone(store, { zone: 'other.test', answers: ['127.0.0.0/30'] });
    assert.equal(await connect(), 'next');
    await h.close();
  }));

test('store zones with action score add up; reaching score_threshold refuses at RCPT, naming every zone', () =>
  withDns(async (dns) => {
    const store = new MemoryStore();
    const h = testPlugin(plugin, { score_threshold: 3 }, { dnsServers: [dns.server], store });
    await putZone(store, { zone: 'bl.test', action: 'score', score: 2 });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'next');
    const below = await h.run('rcpt', { rcpt: 'a@example.test' });
    assert.equal(below.verdict.kind, 'next');
    assert.ok(below.trace.some((t) => t.detail === 'dnsbl score 2/3 (bl.test=2)'), JSON.stringify(below.trace));
    await putZone(store, { zone: 'other.test', action: 'score', score: 1.5 });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    const over = await h.run('rcpt', { rcpt: 'a@example.test' });
    assert.deepEqual(over.verdict, { kind: 'reject', code: 554, enhanced: '5.7.1', text: 'Service unavailable; client [192.0.2.99] blocked using bl.test, other.test' });
    await h.close();
  }));

test('a damaged store entry is skipped; an unreadable store leaves the last zones read', () =>
  withDns(async (dns) => {
    const store = new MemoryStore();
    const h = testPlugin(plugin, {}, { dnsServers: [dns.server], store });
    await store.hset(DNSBL_ZONES_KEY, 'junk.test', '{not json');
    await putZone(store, { zone: 'bl.test' });
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'reject');
    const hgetall = store.hgetall.bind(store);
    store.hgetall = () => Promise.reject(new StoreUnavailableError('down'));
    h.newConnection({ remoteAddress: '192.0.2.99' });
    assert.equal((await h.run('connect')).verdict.kind, 'reject');
    store.hgetall = hgetall;
    await h.close();
  }));
