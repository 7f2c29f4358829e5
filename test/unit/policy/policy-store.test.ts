// Run-time policy read from the store (src/policy/): the merged route table (config below, store
// on top), the last good entries during a store outage, damaged entries skipped, credentials
// folded into the transport URL only, and DNSBL answer specs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../../../src/store/memory.js';
import { StoreUnavailableError } from '../../../src/store/errors.js';
import { LiveRoutes, nexthopProblem, RELAY_ROUTES_KEY, routeKey, transportNexthop, withoutCredentials, type StoredRoute } from '../../../src/policy/routes.js';
import { answerMatcher, zoneName } from '../../../src/policy/dnsbl.js';
import { humanWindow, rateLimitId } from '../../../src/policy/rate-limits.js';
import { parseNexthop } from '../../../src/transport/outbound.js';

const route = (domain: string, nexthop: string, extra: Partial<StoredRoute> = {}): StoredRoute => ({ domain, nexthop, mode: 'queue', verify: 'none', updated_at: '2026-01-01T00:00:00.000Z', ...extra });

describe('LiveRoutes', () => {
  it('the config routes, with the store routes added and replacing equal keys; read afresh each time', async () => {
    const store = new MemoryStore();
    const live = new LiveRoutes({ 'a.example': { nexthop: 'smtp://192.0.2.1', mode: 'queue', verify: 'none' } }, store);
    assert.equal((await live.table()).find('a.example')?.route.nexthop, 'smtp://192.0.2.1');
    await store.hset(RELAY_ROUTES_KEY, 'a.example', JSON.stringify(route('a.example', 'smtp://192.0.2.2')));
    await store.hset(RELAY_ROUTES_KEY, '.b.example', JSON.stringify(route('.b.example', 'lmtp://192.0.2.3:24')));
    const t = await live.table();
    assert.equal(t.find('A.Example.')?.route.nexthop, 'smtp://192.0.2.2');
    assert.equal(t.find('x.b.example')?.key, '.b.example');
    assert.equal(t.find('b.example'), null);
    await store.hdel(RELAY_ROUTES_KEY, 'a.example');
    assert.equal((await live.table()).find('a.example')?.route.nexthop, 'smtp://192.0.2.1');
  });

  it('keeps the last routes read while the store cannot be read; skips damaged entries', async () => {
    const store = new MemoryStore();
    const live = new LiveRoutes({}, store);
    await store.hset(RELAY_ROUTES_KEY, 'a.example', JSON.stringify(route('a.example', 'smtp://192.0.2.2')));
    await store.hset(RELAY_ROUTES_KEY, 'junk', '{oops');
    await store.hset(RELAY_ROUTES_KEY, 'bad.example', JSON.stringify(route('bad.example', 'http://x')));
    assert.deepEqual((await live.table()).has('a.example'), true);
    assert.equal((await live.table()).has('bad.example'), false);
    store.hgetall = () => Promise.reject(new StoreUnavailableError('down'));
    assert.equal((await live.table()).find('a.example')?.route.nexthop, 'smtp://192.0.2.2');
  });

  it('without a store: the config routes alone', async () => {
    assert.equal((await new LiveRoutes({ 'a.example': { nexthop: 'smtp://h', mode: 'queue', verify: 'none' } }, undefined).table()).has('a.example'), true);
  });
});

describe('route fields', () => {
  it('routeKey: domains and .wildcards, normalised; anything else is null', () => {
    const cases: [string, string | null][] = [
      ['Corp.Example.', 'corp.example'],
      ['.Sub.Example', '.sub.example'],
      // One label is refused: a routed domain is relayed for anyone.
      ['localhost', null],
      ['com', null],
      ['.com', null],
      ['..example', null],
      ['a b.example', null],
      ['-x.example', null],
      ['', null],
    ];
    for (const [input, want] of cases) assert.equal(routeKey(input), want, input);
  });

  it('nexthopProblem: the four schemes; credentials, queries, paths and relative sockets refused', () => {
    const cases: [string, RegExp | null][] = [
      ['smtp://10.0.0.5:25', null],
      ['smtps://mail.example', null],
      ['lmtp://[2001:db8::1]:24', null],
      ['lmtp+unix:/run/lmtp', null],
      ['lmtp+unix:run/lmtp', /absolute/],
      ['ftp://x', /scheme/],
      ['smtp://u:p@h', /credentials/],
      ['smtp://h?tls=none', /TLS policy/],
      ['smtp://h/path', /no path/],
      ['nonsense', /expected/],
    ];
    for (const [input, want] of cases) {
      const p = nexthopProblem(input);
      if (want === null) assert.equal(p, null, input);
      else assert.match(p ?? '', want, input);
    }
  });

  it('transportNexthop folds credentials (encoded) and tls into a URL the transport parses back', () => {
    const url = transportNexthop(route('a.example', 'smtp://10.0.0.5:2525', { tls: 'verify', auth: { username: 'us@r', password: 'p:w/@%' } }));
    assert.deepEqual(parseNexthop(url), { protocol: 'smtp', host: '10.0.0.5', port: 2525, secure: false, tls: 'verify', auth: { user: 'us@r', pass: 'p:w/@%' } });
    assert.equal(withoutCredentials(url), 'smtp://***@10.0.0.5:2525?tls=verify');
    assert.equal(transportNexthop(route('a.example', 'lmtp+unix:/run/x')), 'lmtp+unix:/run/x');
    assert.equal(transportNexthop(route('a.example', 'smtp://h')), 'smtp://h');
  });
});

describe('DNSBL answers and zones', () => {
  it('answerMatcher: an address, a CIDR range, an inclusive from-to range', () => {
    const cases: [string, string, boolean][] = [
      ['127.0.0.2', '127.0.0.2', true],
      ['127.0.0.2', '127.0.0.3', false],
      ['127.0.0.0/30', '127.0.0.3', true],
      ['127.0.0.0/30', '127.0.0.4', false],
      ['127.0.0.2-127.0.0.11', '127.0.0.11', true],
      ['127.0.0.2-127.0.0.11', '127.0.0.12', false],
      ['127.0.0.2-127.0.0.11', '127.0.0.1', false],
      ['127.0.0.2-127.0.1.0', '127.0.0.200', true],
      ['127.0.0.2', 'not an ip', false],
    ];
    for (const [spec, answer, want] of cases) assert.equal(answerMatcher(spec)(answer), want, `${spec} ${answer}`);
    for (const bad of ['127.0.0.9-127.0.0.2', '::1', '127.0.0.1-x', 'nope', '127.0.0.0/33']) assert.throws(() => answerMatcher(bad), Error, bad);
  });

  it('zoneName: at least two labels, normalised', () => {
    assert.equal(zoneName('Zen.Example.'), 'zen.example');
    assert.equal(zoneName('localhost'), null);
    assert.equal(zoneName('a..b'), null);
  });
});

describe('rate-limit policy ids and windows', () => {
  it('the id stands for key and window; windows print in their largest unit', () => {
    assert.equal(rateLimitId('client_ip', 3_600_000), rateLimitId('client_ip', 3_600_000));
    assert.notEqual(rateLimitId('client_ip', 3_600_000), rateLimitId('recipient', 3_600_000));
    assert.notEqual(rateLimitId('client_ip', 3_600_000), rateLimitId('client_ip', 60_000));
    assert.deepEqual([86_400_000, 3_600_000, 5_400_000, 90_000, 1500].map(humanWindow), ['1d', '1h', '90m', '90s', '1500ms']);
  });
});
