import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRouter } from '../../../src/delivery/router.js';
import { LiveRoutes, RELAY_ROUTES_KEY } from '../../../src/policy/routes.js';
import { StoreUnavailableError } from '../../../src/store/errors.js';
import { failingStore } from '../../helpers/failing-store.js';
import { FakeDirectory } from '../queue/fake-directory.js';
import { testConfig } from '../queue/helpers.js';

function setup() {
  const dir = new FakeDirectory(['example.test'], ['alice@example.test', 'bob@example.test']);
  dir.aliases.set('team@example.test', ['alice@example.test', 'bob@example.test', 'carol@partner.example']);
  const config = testConfig('/unused', {
    routes: { 'corp.example': 'smtp://10.0.0.5:25', '.sub.example': { nexthop: 'lmtp://10.0.0.6:24', mode: 'queue' }, '.deep.sub.example': 'smtp://10.0.0.7:25' },
  });
  return { dir, router: createRouter({ config, directory: dir }) };
}

test('routing table', async () => {
  const { router } = setup();
  const cases: [string, unknown][] = [
    ['alice@example.test', { status: 'ok', targets: [{ kind: 'local', user: 'alice@example.test', address: 'alice@example.test' }] }],
    ['alice+news@EXAMPLE.test', { status: 'ok', targets: [{ kind: 'local', user: 'alice@example.test', address: 'alice+news@example.test', detail: 'news' }] }],
    ['nobody@example.test', { status: 'unknown' }],
    ['not an address', { status: 'invalid', reason: 'malformed address' }],
    ['x@corp.example', { status: 'ok', targets: [{ kind: 'remote', address: 'x@corp.example', domain: 'corp.example', via: { type: 'route', nexthop: 'smtp://10.0.0.5:25', mode: 'queue', verify: 'none', match: 'corp.example' } }] }],
    ['x@a.sub.example', { status: 'ok', targets: [{ kind: 'remote', address: 'x@a.sub.example', domain: 'a.sub.example', via: { type: 'route', nexthop: 'lmtp://10.0.0.6:24', mode: 'queue', verify: 'none', match: '.sub.example' } }] }],
    ['x@b.deep.sub.example', { status: 'ok', targets: [{ kind: 'remote', address: 'x@b.deep.sub.example', domain: 'b.deep.sub.example', via: { type: 'route', nexthop: 'smtp://10.0.0.7:25', mode: 'queue', verify: 'none', match: '.deep.sub.example' } }] }],
    // ".sub.example" is for subdomains only.
    ['x@sub.example', { status: 'ok', targets: [{ kind: 'remote', address: 'x@sub.example', domain: 'sub.example', via: { type: 'mx' } }] }],
    ['x@elsewhere.example', { status: 'ok', targets: [{ kind: 'remote', address: 'x@elsewhere.example', domain: 'elsewhere.example', via: { type: 'mx' } }] }],
  ];
  for (const [addr, want] of cases) assert.deepEqual(await router.route(addr), want, addr);
});

test('aliases expand into local users and remote addresses', async () => {
  const { router } = setup();
  const r = await router.route('team@example.test');
  assert.equal(r.status, 'ok');
  if (r.status !== 'ok') return;
  assert.deepEqual(
    r.targets.map((t) => (t.kind === 'local' ? `L ${t.user}` : `R ${t.address} ${t.via.type}`)),
    ['L alice@example.test', 'L bob@example.test', 'R carol@partner.example mx'],
  );
});

test('catch-all, and directory errors propagate', async () => {
  const { dir, router } = setup();
  await dir.setCatchAll('example.test', 'bob@example.test');
  const r = await router.route('whoever@example.test');
  assert.deepEqual(r, { status: 'ok', targets: [{ kind: 'local', user: 'bob@example.test', address: 'bob@example.test' }] });
  dir.failWith = new Error('directory down');
  await assert.rejects(router.route('alice@example.test'), /directory down/);
  // Foreign domains need no directory lookup.
  assert.equal((await router.route('x@elsewhere.example')).status, 'ok');
});

test('a percent-hack address in a local domain is not relayed', async () => {
  const { router } = setup();
  assert.deepEqual(await router.route('x%elsewhere.example@example.test'), { status: 'unknown' });
});

test('routes in the store never read: no remote domain goes by MX, local and configured ones still route', async () => {
  const { dir } = setup();
  const down = new Set([RELAY_ROUTES_KEY]);
  const store = failingStore(down);
  await store.hset(RELAY_ROUTES_KEY, 'partner.example', JSON.stringify({ domain: 'partner.example', nexthop: 'smtp://10.0.0.9:25' }));
  const config = testConfig('/unused', { routes: { 'corp.example': 'smtp://10.0.0.5:25' } });
  const router = createRouter({ config, directory: dir, routes: new LiveRoutes(config.routes, store) });
  const viaOf = async (addr: string) => {
    const r = await router.route(addr);
    return r.status === 'ok' ? r.targets.map((t) => (t.kind === 'local' ? `local ${t.user}` : t.via.type === 'route' ? t.via.nexthop : 'mx')) : r.status;
  };
  for (const addr of ['x@partner.example', 'x@elsewhere.example', 'team@example.test']) {
    await assert.rejects(router.route(addr), (e: unknown) => e instanceof StoreUnavailableError && /may have one/.test(e.message), addr);
  }
  assert.deepEqual(await viaOf('alice@example.test'), ['local alice@example.test']);
  assert.deepEqual(await viaOf('x@corp.example'), ['smtp://10.0.0.5:25']);
  down.clear();
  assert.deepEqual(await viaOf('x@partner.example'), ['smtp://10.0.0.9:25']);
  assert.deepEqual(await viaOf('x@elsewhere.example'), ['mx']);
  down.add(RELAY_ROUTES_KEY); // read once: the last good routes stand in, and the rest is known to go by MX
  assert.deepEqual(await viaOf('x@partner.example'), ['smtp://10.0.0.9:25']);
  assert.deepEqual(await viaOf('x@elsewhere.example'), ['mx']);
});
