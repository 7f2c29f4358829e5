// The next hop of a queued recipient is looked up again at every attempt, from the routes as they
// are then (config + store), as Postfix's qmgr resolves each recipient again: a route added while
// mail waits takes it at the next retry, a route removed sends it by MX again, and a `.state` file
// written by an earlier build (which kept each target's `via`) does not pin the old next hop.
// Real parts: the queue, the outbound transport, a loopback DNS server, smtp-server sinks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createMessageQueue, type EntryState, type ManagedQueue } from '../../../src/queue/manager.js';
import { Spool } from '../../../src/queue/spool.js';
import { newQueueId } from '../../../src/queue/queue-id.js';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { LiveRoutes, RELAY_ROUTES_KEY } from '../../../src/policy/routes.js';
import { MemoryStore } from '../../../src/store/memory.js';
import type { Store } from '../../../src/store/store.js';
import type { Config } from '../../../src/config/load.js';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { failingStore } from '../../helpers/failing-store.js';
import { FakeDirectory } from './fake-directory.js';
import { captureLogger, envelope, message, tempDir, testConfig } from './helpers.js';
import { until } from '../../helpers/wait.js';

const MX_HOST = '127.0.0.15';
const ROUTE_HOST = '127.0.0.16';

let dns: RunningDnsServer;
let mx: RunningSink;
let hop: RunningSink;

before(async () => {
  // Each test says which domains answer SERVFAIL (dnsFor): MX delivery to them is deferred with
  // "DNS lookup of … failed".
  dns = await startDnsServer({ records: {} });
  mx = await startSink({}, 0, MX_HOST);
  hop = await startSink({}, 0, ROUTE_HOST);
});
after(async () => {
  await mx.stop();
  await hop.stop();
  await dns.stop();
});

/** DNS for one test: `fail` answer SERVFAIL, `up` have an A record at the MX sink. */
function dnsFor(fail: string[], up: string[] = []): void {
  dns.setRecords(Object.fromEntries(up.map((d) => [d, { A: [MX_HOST] }])));
  dns.setBehaviour((name) => (fail.includes(name) ? 'servfail' : 'answer'));
}

const routeTo = (sink: RunningSink) => `smtp://${sink.host}:${sink.port}`;

async function storeRoute(store: Store, domain: string, nexthop: string): Promise<void> {
  await store.hset(RELAY_ROUTES_KEY, domain, JSON.stringify({ domain, nexthop, mode: 'queue', verify: 'none', updated_at: new Date().toISOString() }));
}

async function setup() {
  const t = await tempDir();
  // A long retry wait: nothing is retried on its own, only by `retry()` (postern queue retry).
  const config = (routes: Record<string, string> = {}) =>
    testConfig(t.dir, { routes, dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: mx.port, tls: 'none', retry: ['1h'] } });
  const cap = captureLogger();
  const make = (cfg: Config, store?: Store): ManagedQueue =>
    createMessageQueue({
      config: cfg,
      log: cap.log,
      directory: new FakeDirectory(['example.test'], ['alice@example.test']),
      routes: new LiveRoutes(cfg.routes, store),
      outbound: new Outbound({ config: cfg, dns: createResolver(cfg.dns), log: cap.log, client: { connectTimeoutMs: 2000 } }),
    });
  return { ...t, config, make, ...cap };
}

const spoolIds = async (dir: string) => (await readdir(join(dir, 'spool', 'q'))).filter((f) => !f.includes('.'));
/** Notices (DSNs) come back to the local sender's Maildir. */
const notices = async (dir: string) => readdir(join(dir, 'mail', 'example.test', 'alice', 'new')).catch(() => [] as string[]);
const readState = async (dir: string, id: string) => JSON.parse(await readFile(join(dir, 'spool', 'q', `${id}.state`), 'utf8')) as EntryState;
const statusOf = async (dir: string, id: string, address: string) => (await readState(dir, id).catch(() => null))?.targets.find((t) => t.address === address)?.status;
const sentTo = (sink: RunningSink, address: string) => sink.messages.filter((m) => m.to.includes(address));
const settle = () => new Promise((r) => setTimeout(r, 300));

test('a route added in the store while a recipient waits on a failing MX lookup: the retry takes the route, once; the recipient relayed before is not sent again', async () => {
  dnsFor(['z1.test'], ['ok1.test']);
  const s = await setup();
  const store = new MemoryStore();
  try {
    const q = s.make(s.config(), store);
    await q.start();
    const id = q.newId();
    await q.accept(id, envelope('alice@example.test', ['a@ok1.test', 'b@z1.test']), message('x\r\n'));
    await until(async () => (await statusOf(s.dir, id, 'b@z1.test')) === 'deferred');
    assert.match(s.lines.find((l) => l.evt === 'delivery.deferred' && l.rcpt === 'b@z1.test')!.err as string, /DNS lookup of z1\.test failed/);
    assert.equal(sentTo(mx, 'a@ok1.test').length, 1);

    // Both domains routed now: only the recipient still waiting goes, and to the route.
    await storeRoute(store, 'z1.test', routeTo(hop));
    await storeRoute(store, 'ok1.test', routeTo(hop));
    assert.equal(await q.retry(), 1);
    await until(async () => (await spoolIds(s.dir)).length === 0);
    await settle();
    assert.deepEqual(sentTo(hop, 'b@z1.test').map((m) => m.to), [['b@z1.test']]);
    assert.equal(sentTo(hop, 'a@ok1.test').length, 0, 'the recipient relayed before is never sent again');
    assert.equal(sentTo(mx, 'a@ok1.test').length, 1);
    assert.equal(sentTo(mx, 'b@z1.test').length, 0);
    assert.deepEqual(await notices(s.dir), [], 'no DSN');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('a route added to the config, then a restart: the retry of the deferred recipient takes the route, once', async () => {
  dnsFor(['z2.test']);
  const s = await setup();
  try {
    const q1 = s.make(s.config());
    await q1.start();
    const id = q1.newId();
    await q1.accept(id, envelope('alice@example.test', ['user@z2.test']), message('x\r\n'));
    await until(async () => (await statusOf(s.dir, id, 'user@z2.test')) === 'deferred');
    await q1.stop();

    const q2 = s.make(s.config({ 'z2.test': routeTo(hop) }));
    await q2.start();
    assert.equal(await q2.retry(), 1);
    await until(async () => (await spoolIds(s.dir)).length === 0);
    await settle();
    assert.deepEqual(sentTo(hop, 'user@z2.test').map((m) => m.to), [['user@z2.test']]);
    assert.deepEqual(await notices(s.dir), [], 'no DSN');
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

test('a route removed while mail waits for its next hop: the retry goes by MX, as a new message would', async () => {
  // The route's next hop is down at first; the domain's MX works.
  dnsFor([], ['gone3.test']);
  const s = await setup();
  const store = new MemoryStore();
  const old = await startSink({}, 0, ROUTE_HOST);
  await old.down();
  try {
    await storeRoute(store, 'gone3.test', routeTo(old));
    const q = s.make(s.config(), store);
    await q.start();
    const id = q.newId();
    await q.accept(id, envelope('alice@example.test', ['user@gone3.test']), message('x\r\n'));
    await until(async () => (await statusOf(s.dir, id, 'user@gone3.test')) === 'deferred');
    assert.equal(sentTo(mx, 'user@gone3.test').length, 0);

    // The next hop is back, but the route is gone: MX it is.
    await old.up();
    await store.hdel(RELAY_ROUTES_KEY, 'gone3.test');
    await q.retry();
    await until(async () => (await spoolIds(s.dir)).length === 0);
    await settle();
    assert.equal(sentTo(mx, 'user@gone3.test').length, 1);
    assert.equal(old.messages.length, 0, 'not to the removed route');
    assert.deepEqual(await notices(s.dir), [], 'no DSN');
    await q.stop();
  } finally {
    await old.stop();
    await s.cleanup();
  }
});

test("a retry while the store's routes were never read: a recipient without a configured route is deferred, not sent by MX; then it takes the store's route", async () => {
  dnsFor(['w4.test']);
  const s = await setup();
  const keys = new Set<string>();
  const store = failingStore(keys);
  try {
    const q1 = s.make(s.config(), store);
    await q1.start();
    const id = q1.newId();
    await q1.accept(id, envelope('alice@example.test', ['user@w4.test']), message('x\r\n'));
    await until(async () => (await statusOf(s.dir, id, 'user@w4.test')) === 'deferred');
    await q1.stop();

    // A restart in a store outage; the domain's MX would answer now, and the store holds a route.
    await storeRoute(store, 'w4.test', routeTo(hop));
    keys.add(RELAY_ROUTES_KEY);
    dnsFor([], ['w4.test']);
    const q2 = s.make(s.config(), store);
    await q2.start();
    const deferredBefore = s.lines.filter((l) => l.evt === 'delivery.deferred').length;
    await q2.retry();
    await until(() => s.lines.filter((l) => l.evt === 'delivery.deferred').length > deferredBefore);
    await settle();
    assert.equal(sentTo(mx, 'user@w4.test').length, 0, 'never by MX while the routes are unknown');
    assert.equal(sentTo(hop, 'user@w4.test').length, 0);
    const st = await readState(s.dir, id);
    assert.equal(st.targets[0]!.status, 'deferred');
    assert.match(st.targets[0]!.last!, /^451 4\.4\.3 /);

    keys.clear();
    await q2.retry();
    await until(async () => (await spoolIds(s.dir)).length === 0);
    await settle();
    assert.equal(sentTo(hop, 'user@w4.test').length, 1);
    assert.equal(sentTo(mx, 'user@w4.test').length, 0);
    assert.deepEqual(await notices(s.dir), [], 'no DSN');
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

test('a .state file of an earlier build, with each target\'s "via": it loads, the stored next hop is not used, and it is not written back', async () => {
  dnsFor(['wait5.test'], ['old5.test']);
  const s = await setup();
  try {
    const spool = new Spool(s.dir, new DirSyncer());
    await spool.init();
    const id = newQueueId();
    const env = envelope('alice@example.test', ['user@old5.test', 'user@wait5.test']);
    await spool.accept(id, env, message('x\r\n'));
    // As an earlier build wrote it: the next hop of the first attempt, credentials and all.
    const deferred = { status: 'deferred', attempts: 1, next: Date.now() + 3_600_000, last: '451 4.4.1 connection refused', at: Date.now() };
    const old = {
      v: 1,
      targets: [
        { key: 'R:user@old5.test', rcpt: 'user@old5.test', kind: 'remote', address: 'user@old5.test', domain: 'old5.test', via: { type: 'route', nexthop: 'smtp://relay:s3cret@127.0.0.1:1', mode: 'queue', verify: 'none', match: 'old5.test' }, ...deferred },
        { key: 'R:user@wait5.test', rcpt: 'user@wait5.test', kind: 'remote', address: 'user@wait5.test', domain: 'wait5.test', via: { type: 'route', nexthop: 'smtp://relay:s3cret@127.0.0.1:1', mode: 'queue', verify: 'none', match: 'wait5.test' }, ...deferred },
      ],
    };
    await spool.writeState(id, old);
    await spool.close();

    const q = s.make(s.config());
    await q.start();
    assert.deepEqual(q.entries().map((e) => e.targets?.map((t) => t.status)), [['deferred', 'deferred']]);
    await q.retry();
    await until(async () => sentTo(mx, 'user@old5.test').length === 1 && (await statusOf(s.dir, id, 'user@old5.test')) === 'done');
    await settle();
    const st = await readFile(join(s.dir, 'spool', 'q', `${id}.state`), 'utf8');
    assert.doesNotMatch(st, /"via"|s3cret/, 'the old next hop is not written back');
    assert.equal((JSON.parse(st) as EntryState).targets[1]!.status, 'deferred');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});
