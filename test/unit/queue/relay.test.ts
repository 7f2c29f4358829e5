// The queue with the real outbound transport: remote recipients relayed by MX (loopback DNS
// server, smtp-server sinks), retries, exactly-once delivery through outages and restarts, and
// RFC 3464 bounces into the local sender's Maildir, read back with Python's email package.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createMessageQueue } from '../../../src/queue/manager.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink } from '../../helpers/smtp-sink.js';
import { pythonJson } from '../../helpers/python.js';
import { FakeDirectory } from './fake-directory.js';
import { LiveRoutes, RELAY_ROUTES_KEY } from '../../../src/policy/routes.js';
import { failingStore } from '../../helpers/failing-store.js';
import { captureLogger, envelope, message, tempDir, testConfig } from './helpers.js';
import { until } from '../../helpers/wait.js';

let dns: RunningDnsServer;
before(async () => {
  dns = await startDnsServer({ records: {} });
});
after(async () => {
  await dns.stop();
});

async function setup(sinkPort: number, extra: Record<string, unknown> = {}) {
  const t = await tempDir();
  const config = testConfig(t.dir, { dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: sinkPort, tls: 'none', retry: ['100ms'], ...extra } });
  const directory = new FakeDirectory(['example.test'], ['alice@example.test']);
  const cap = captureLogger();
  const make = () => createMessageQueue({ config, log: cap.log, directory, outbound: new Outbound({ config, dns: createResolver(config.dns), log: cap.log, client: { connectTimeoutMs: 2000 } }) });
  return { ...t, config, ...cap, make };
}

const spoolIds = async (dir: string) => (await readdir(join(dir, 'spool', 'q'))).filter((f) => !f.includes('.'));
const maildirNew = async (dir: string) => readdir(join(dir, 'mail', 'example.test', 'alice', 'new')).catch(() => [] as string[]);

const PARSE_DSN = `
import email, sys, json, os
from email import policy
d = sys.argv[1]
out = []
for name in sorted(os.listdir(d)):
    m = email.message_from_binary_file(open(os.path.join(d, name), 'rb'), policy=policy.default)
    parts = list(m.iter_parts())
    ds = parts[1]
    groups = [dict(g.items()) for g in ds.get_payload()]
    out.append({"type": m.get_content_type(), "report_type": m.get_param("report-type"), "parts": [p.get_content_type() for p in parts], "from": m["From"], "return_path": m["Return-Path"], "groups": groups})
print(json.dumps(out))
`;

test('5xx: the local sender gets one RFC 3464 DSN (Python parses it); the entry is gone', async () => {
  const sink = await startSink({ rcpt: (a) => (a.startsWith('nobody') ? { code: 550, message: '5.1.1 No such user here' } : null) }, 0, '127.0.0.11');
  dns.setRecords({ 'remote.test': { MX: [{ exchange: 'mx.remote.test', priority: 10 }] }, 'mx.remote.test': { A: ['127.0.0.11'] } });
  const s = await setup(sink.port);
  try {
    const q = s.make();
    await q.start();
    const id = q.newId();
    const env = envelope('alice@example.test', ['nobody@remote.test', 'ok@remote.test']);
    env.recipients[0]!.orcpt = 'rfc822;nobody@remote.test';
    await q.accept(id, env, message('hello\r\n'));
    await until(async () => (await maildirNew(s.dir)).length === 1 && (await spoolIds(s.dir)).length === 0);
    assert.equal(sink.messages.length, 1);
    assert.deepEqual(sink.messages[0]!.to, ['ok@remote.test']);
    const [dsn] = await pythonJson<{ type: string; report_type: string; parts: string[]; return_path: string; groups: Record<string, string>[] }[]>(PARSE_DSN, [join(s.dir, 'mail', 'example.test', 'alice', 'new')]);
    assert.equal(dsn!.type, 'multipart/report');
    assert.equal(dsn!.report_type, 'delivery-status');
    assert.deepEqual(dsn!.parts, ['text/plain', 'message/delivery-status', 'message/rfc822']);
    assert.equal(dsn!.return_path, '<>');
    assert.equal(dsn!.groups[0]!['Reporting-MTA'], 'dns; mx.example.test');
    const g = dsn!.groups[1]!;
    assert.equal(g['Final-Recipient'], 'rfc822; nobody@remote.test');
    assert.equal(g['Original-Recipient'], 'rfc822; nobody@remote.test');
    assert.equal(g['Action'], 'failed');
    assert.equal(g['Status'], '5.1.1');
    assert.equal(g['Remote-MTA'], 'dns; mx.remote.test');
    assert.match(g['Diagnostic-Code']!, /^smtp; 550 5\.1\.1 No such user here/);
    assert.equal(dsn!.groups.length, 2, 'one recipient group: the accepted recipient is not reported');
    await q.stop();
  } finally {
    await sink.stop();
    await s.cleanup();
  }
});

test('null MX bounces at once, without a connection attempt', async () => {
  dns.setRecords({ 'nomail.test': { MX: [{ exchange: '.', priority: 0 }] } });
  const s = await setup(1);
  try {
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('alice@example.test', ['x@nomail.test']), message('x\r\n'));
    await until(async () => (await maildirNew(s.dir)).length === 1 && (await spoolIds(s.dir)).length === 0);
    const [dsn] = await pythonJson<{ groups: Record<string, string>[] }[]>(PARSE_DSN, [join(s.dir, 'mail', 'example.test', 'alice', 'new')]);
    assert.equal(dsn!.groups[1]!['Status'], '5.1.10');
    assert.equal(dsn!.groups[1]!['Action'], 'failed');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('4xx then accepted: retried and delivered exactly once', async () => {
  let refusals = 2;
  const sink = await startSink({ rcpt: () => (refusals-- > 0 ? { code: 451, message: '4.7.1 greylisted' } : null) }, 0, '127.0.0.12');
  dns.setRecords({ 'grey.test': { A: ['127.0.0.12'] } });
  const s = await setup(sink.port);
  try {
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('alice@example.test', ['x@grey.test']), message('x\r\n'));
    await until(async () => sink.messages.length === 1 && (await spoolIds(s.dir)).length === 0);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sink.messages.length, 1);
    assert.equal(sink.rcptSeen.length, 3);
    assert.deepEqual(await maildirNew(s.dir), [], 'no notice: delivered well before delay_warning');
    // Relayed: the removal must survive a crash, or the message would go out again.
    assert.equal(q.spool.removalSyncs, 1, 'the removal fsynced q/');
    await q.stop();
  } finally {
    await sink.stop();
    await s.cleanup();
  }
});

test('a domain routed in the store while its routes were never read: deferred, then relayed by its route, never by MX', async () => {
  const sink = await startSink({}, 0, '127.0.0.13');
  // No DNS records for partner.test: sent by MX, the message would bounce.
  const down = new Set([RELAY_ROUTES_KEY]);
  const store = failingStore(down);
  await store.hset(RELAY_ROUTES_KEY, 'partner.test', JSON.stringify({ domain: 'partner.test', nexthop: `smtp://127.0.0.13:${sink.port}` }));
  const s = await setup(sink.port);
  try {
    const q = createMessageQueue({ config: s.config, log: s.log, directory: new FakeDirectory(['example.test'], ['alice@example.test']), routes: new LiveRoutes(s.config.routes, store), outbound: new Outbound({ config: s.config, dns: createResolver(s.config.dns), log: s.log, client: { connectTimeoutMs: 2000 } }) });
    await q.start();
    await q.accept(q.newId(), envelope('alice@example.test', ['x@partner.test']), message('x\r\n'));
    await until(() => s.lines.some((l) => l.evt === 'delivery.deferred'));
    assert.equal(sink.messages.length, 0);
    assert.equal((await spoolIds(s.dir)).length, 1, 'still queued');
    down.clear();
    await until(async () => sink.messages.length === 1 && (await spoolIds(s.dir)).length === 0);
    assert.deepEqual(await maildirNew(s.dir), [], 'no bounce, no delay notice');
    await q.stop();
  } finally {
    await sink.stop();
    await s.cleanup();
  }
});

test('next hop down for a while, then up; a restart in between: every message delivered once', async () => {
  const sink = await startSink({}, 0, '127.0.0.13');
  await sink.down();
  dns.setRecords({ 'later.test': { A: ['127.0.0.13'] } });
  const s = await setup(sink.port);
  try {
    let q = s.make();
    await q.start();
    for (let i = 0; i < 5; i++) await q.accept(q.newId(), envelope('alice@example.test', [`u${i}@later.test`]), message(`n${i}\r\n`));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal((await spoolIds(s.dir)).length, 5);
    await q.stop();
    q = s.make();
    await q.start();
    await sink.up();
    await until(async () => (await spoolIds(s.dir)).length === 0);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(sink.messages.map((m) => m.to[0]).sort(), ['u0@later.test', 'u1@later.test', 'u2@later.test', 'u3@later.test', 'u4@later.test']);
    await q.stop();
  } finally {
    await sink.stop();
    await s.cleanup();
  }
});

test('outbound.lifetime: a recipient deferred past it fails with a DSN; delay notices after delay_warning', async () => {
  const sink = await startSink({ rcpt: () => ({ code: 450, message: '4.2.1 busy' }) }, 0, '127.0.0.14');
  dns.setRecords({ 'busy.test': { A: ['127.0.0.14'] } });
  const s = await setup(sink.port, { lifetime: '1s', delay_warning: '300ms', retry: ['150ms'] });
  try {
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('alice@example.test', ['x@busy.test']), message('x\r\n'));
    await until(async () => (await maildirNew(s.dir)).length === 2 && (await spoolIds(s.dir)).length === 0);
    const dsns = await pythonJson<{ groups: Record<string, string>[] }[]>(PARSE_DSN, [join(s.dir, 'mail', 'example.test', 'alice', 'new')]);
    assert.deepEqual(dsns.map((d) => d.groups[1]!['Action']).sort(), ['delayed', 'failed']);
    const failed = dsns.find((d) => d.groups[1]!['Action'] === 'failed')!;
    assert.equal(failed.groups[1]!['Status'], '4.4.7');
    assert.match(failed.groups[1]!['Diagnostic-Code']!, /450 4\.2\.1 busy/);
    await q.stop();
  } finally {
    await sink.stop();
    await s.cleanup();
  }
});
