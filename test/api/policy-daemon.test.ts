// Routes, rate-limit policies and DNSBL zones set over REST, and their effect on real `postern`
// daemons without a restart:
//   - one daemon (embedded store): a route added over the API sends mail for its domain to a
//     loopback sink (logging in with the route's credentials); a DNSBL zone makes the daemon
//     refuse a client the loopback DNS server lists; a rate-limit policy tempfails with 4.7.0;
//   - two daemons on one Redis (REDIS_URL, a key prefix of this run's own): each change made
//     through node A's API applies to node B's very next transaction (the policy is read from
//     the store for every transaction, so there is no refresh interval to wait for), and a delete
//     at A takes it back at B the same way;
//   - Redis killed (a private redis-server): the daemon keeps the route and the DNSBL zone it
//     last knew, and mail for the routed domain still reaches its next hop.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { testTls } from '../helpers/tls.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { daemonApi } from './harness.js';

const TOKEN = 'policy-daemon-token-0123456789';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A REST client for one daemon; every answer is checked against openapi.yaml. */
const restClient = (d: RunningDaemon) => daemonApi(d.ports.api!, TOKEN);

/** The greeting (or refusal) a client at `localAddress` gets, then its EHLO reply. */
async function greet(port: number, localAddress: string): Promise<string> {
  const s = await openSmtp(port, { localAddress });
  try {
    const first = (await s.reply()) ?? '(closed)';
    if (!first.startsWith('220')) return first;
    s.send('EHLO client.example');
    return (await s.reply()) ?? '(closed)';
  } finally {
    s.close();
  }
}

/** One transaction from 127.0.0.1: the MAIL reply, the RCPT reply, then DATA's if accepted. */
async function transaction(port: number, from: string, rcpt: string): Promise<{ mail: string; rcpt?: string; data?: string }> {
  const s = await openSmtp(port);
  try {
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    s.send(`MAIL FROM:<${from}>`);
    const mail = (await s.reply()) ?? '(closed)';
    if (!mail.startsWith('250')) return { mail };
    s.send(`RCPT TO:<${rcpt}>`);
    const rcptReply = (await s.reply()) ?? '(closed)';
    if (!rcptReply.startsWith('250')) return { mail, rcpt: rcptReply };
    await s.cmd('DATA', '354');
    s.send(`From: ${from}\r\nTo: ${rcpt}\r\nSubject: policy test\r\n\r\nhello\r\n.`);
    return { mail, rcpt: rcptReply, data: (await s.reply()) ?? '(closed)' };
  } finally {
    s.close();
  }
}

const daemonConfig = (dnsPort: number, extra: Record<string, unknown> = {}) => ({
  listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
  // Loopback clients are ordinary Internet clients here: no relaying, and DNSBL-checked.
  relay: { networks: [] },
  dns: { servers: [`127.0.0.1:${dnsPort}`] },
  // dnsbl and rate-limit without options of their own: they run on the store's zones and policies.
  plugins: ['relay-acl', 'dnsbl', 'rate-limit'],
  api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'write' }] },
  ...extra,
});

describe('routes, rate limits and DNSBL zones over REST, in a running daemon', () => {
  let d: RunningDaemon;
  let dns: RunningDnsServer;
  let sink: RunningSink;
  let api: ReturnType<typeof restClient>;

  before(async () => {
    // RFC 5782 §5 test entry: 127.0.0.2 is listed.
    dns = await startDnsServer({ records: { '2.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
    sink = await startSink({ tls: await testTls(), auth: { user: 'relay', pass: 'p@ss:word' } });
    d = await startDaemon(daemonConfig(dns.port), { timeoutMs: 60_000 });
    api = restClient(d);
  });
  after(async () => {
    await d?.stop();
    await dns?.stop();
    await sink?.stop();
    if (d) await removeDir(d.dir);
  });

  it('a route PUT makes mail for its domain go to that next hop, with its credentials; DELETE takes it back', async () => {
    assert.match((await transaction(d.ports.smtp!, 'a@sender.example', 'x@corp.example')).rcpt!, /^554 5\.7\.1/, 'not routed yet: relay denied');
    const put = await api('PUT', '/v1/policies/relay/routes/corp.example', { nexthop: `smtp://127.0.0.1:${sink.port}`, tls: 'required', auth: { username: 'relay', password: 'p@ss:word' } });
    assert.equal(put.status, 201);
    const t = await transaction(d.ports.smtp!, 'a@sender.example', 'x@corp.example');
    assert.match(t.data ?? t.rcpt ?? t.mail, /^250/);
    const got = await waitFor(
      () => sink.messages,
      (m) => m.length > 0,
    );
    assert.deepEqual([got[0]!.from, got[0]!.to], ['a@sender.example', ['x@corp.example']]);
    assert.match(got[0]!.data.toString(), /Subject: policy test/);
    // The password stays out of the daemon's log.
    assert.ok(!d.logs.some((l) => JSON.stringify(l).includes('p@ss:word')));
    assert.equal((await api('DELETE', '/v1/policies/relay/routes/corp.example')).status, 204);
    assert.match((await transaction(d.ports.smtp!, 'a@sender.example', 'x@corp.example')).rcpt!, /^554 5\.7\.1/);
  });

  it('a DNSBL zone PUT makes the daemon refuse a listed client at connect; DELETE lets it in again', async () => {
    assert.match(await greet(d.ports.smtp!, '127.0.0.2'), /^250/, 'no zones yet');
    assert.equal((await api('PUT', '/v1/dnsbl/zones/bl.test', { answers: ['127.0.0.2-127.0.0.11'] })).status, 201);
    assert.match(await greet(d.ports.smtp!, '127.0.0.2'), /^554 5\.7\.1 .*bl\.test/);
    assert.match(await greet(d.ports.smtp!, '127.0.0.1'), /^250/, 'an unlisted client passes');
    assert.equal((await api('PUT', '/v1/dnsbl/zones/bl.test', { answers: ['127.0.0.3'] })).status, 200);
    assert.match(await greet(d.ports.smtp!, '127.0.0.2'), /^250/, 'an answer outside `answers` is no listing');
    assert.equal((await api('DELETE', '/v1/dnsbl/zones/bl.test')).status, 204);
  });

  it('a rate-limit policy POST tempfails the transaction over the limit with 451 4.7.0', async () => {
    const p = await api('POST', '/v1/policies/relay/rate-limits', { key: 'sender_domain', max: 1, window: '1h' });
    assert.equal(p.status, 201);
    assert.match((await transaction(d.ports.smtp!, 'a@limited.example', 'x@example.test')).mail, /^250/);
    assert.match((await transaction(d.ports.smtp!, 'b@limited.example', 'x@example.test')).mail, /^451 4\.7\.0 Rate limit exceeded \(sender_domain limited\.example\)/);
    assert.match((await transaction(d.ports.smtp!, 'a@other.example', 'x@example.test')).mail, /^250/, 'another sender domain is counted apart');
    assert.equal((await api('DELETE', `/v1/policies/relay/rate-limits/${String(p.json().id)}`)).status, 204);
    assert.match((await transaction(d.ports.smtp!, 'c@limited.example', 'x@example.test')).mail, /^250/);
  });
});

describe('two daemons on one Redis: a change through A applies at B', () => {
  const prefix = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:policy:`;
  let a: RunningDaemon;
  let b: RunningDaemon;
  let dns: RunningDnsServer;
  let sink: RunningSink;
  let apiA: ReturnType<typeof restClient>;

  before(async () => {
    dns = await startDnsServer({ records: { '2.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
    sink = await startSink();
    const config = daemonConfig(dns.port, { store: { driver: 'redis', url: REDIS_URL, prefix } });
    a = await startDaemon(config, { timeoutMs: 60_000 });
    b = await startDaemon(config, { timeoutMs: 60_000 });
    apiA = restClient(a);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await dns?.stop();
    await sink?.stop();
    if (a) await removeDir(a.dir);
    if (b) await removeDir(b.dir);
    const r = new Redis(REDIS_URL);
    try {
      const keys = await r.keys(`${prefix}*`);
      if (keys.length) await r.del(...keys);
    } finally {
      await r.quit();
    }
  });

  it('a route PUT at A: B routes the domain on its next transaction; a DELETE at A takes it back at B', async () => {
    assert.match((await transaction(b.ports.smtp!, 'a@sender.example', 'x@a.branch.example')).rcpt!, /^554 5\.7\.1/);
    assert.equal((await apiA('PUT', '/v1/policies/relay/routes/.branch.example', { nexthop: `smtp://127.0.0.1:${sink.port}` })).status, 201);
    const t = await transaction(b.ports.smtp!, 'a@sender.example', 'x@a.branch.example');
    assert.match(t.data ?? t.rcpt ?? t.mail, /^250/);
    const got = await waitFor(
      () => sink.messages,
      (m) => m.length > 0,
    );
    assert.deepEqual(got[0]!.to, ['x@a.branch.example']);
    assert.equal((await apiA('DELETE', '/v1/policies/relay/routes/.branch.example')).status, 204);
    assert.match((await transaction(b.ports.smtp!, 'a@sender.example', 'x@a.branch.example')).rcpt!, /^554 5\.7\.1/);
  });

  it('a DNSBL zone PUT at A: B refuses the listed client on its next connection', async () => {
    assert.match(await greet(b.ports.smtp!, '127.0.0.2'), /^250/);
    assert.equal((await apiA('PUT', '/v1/dnsbl/zones/bl.test', {})).status, 201);
    assert.match(await greet(b.ports.smtp!, '127.0.0.2'), /^554 5\.7\.1 .*bl\.test/);
    assert.equal((await apiA('DELETE', '/v1/dnsbl/zones/bl.test')).status, 204);
    assert.match(await greet(b.ports.smtp!, '127.0.0.2'), /^250/);
  });

  it('a rate-limit policy POST at A: the counters are shared, B tempfails once A and B together reach the limit', async () => {
    assert.equal((await apiA('POST', '/v1/policies/relay/rate-limits', { key: 'sender_domain', max: 2, window: '10m' })).status, 201);
    assert.match((await transaction(a.ports.smtp!, 'a@shared.example', 'x@example.test')).mail, /^250/);
    assert.match((await transaction(b.ports.smtp!, 'b@shared.example', 'x@example.test')).mail, /^250/);
    assert.match((await transaction(b.ports.smtp!, 'c@shared.example', 'x@example.test')).mail, /^451 4\.7\.0/);
  });
});

describe('Redis down: the last known routes and zones stay in force', () => {
  it('a route and a DNSBL zone set over REST keep working while Redis is down', { timeout: 120_000 }, async () => {
    const dns = await startDnsServer({ records: { '2.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
    const sink = await startSink();
    const redis = await startRedisServer();
    const d = await startDaemon(daemonConfig(dns.port, { store: { driver: 'redis', url: redis.url, prefix: 'outage:', command_timeout: '1s' } }), { timeoutMs: 60_000 });
    try {
      const api = restClient(d);
      assert.equal((await api('PUT', '/v1/policies/relay/routes/corp.example', { nexthop: `smtp://127.0.0.1:${sink.port}` })).status, 201);
      assert.equal((await api('PUT', '/v1/dnsbl/zones/bl.test', {})).status, 201);
      // Read once while Redis is up (what a node has seen is what it keeps).
      assert.match((await transaction(d.ports.smtp!, 'a@sender.example', 'before@corp.example')).data!, /^250/);
      assert.match(await greet(d.ports.smtp!, '127.0.0.2'), /^554 5\.7\.1/);

      await redis.kill();
      await waitFor(
        () => d.logs.some((l) => l.evt === 'store.unavailable'),
        (v) => v,
      );
      assert.match(await greet(d.ports.smtp!, '127.0.0.2'), /^554 5\.7\.1 .*bl\.test/, 'the zone is still in force');
      const t = await transaction(d.ports.smtp!, 'a@sender.example', 'during@corp.example');
      assert.match(t.data ?? t.rcpt ?? t.mail, /^250/, 'the routed domain is still accepted');
      const got = await waitFor(
        () => sink.messages.flatMap((m) => m.to),
        (to) => to.includes('during@corp.example'),
        30_000,
      );
      assert.ok(got.includes('during@corp.example'), 'and delivered to its next hop');
    } finally {
      await d.stop();
      await removeDir(d.dir);
      await redis.stop();
      await sink.stop();
      await dns.stop();
    }
  });
});
