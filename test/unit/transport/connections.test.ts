// Outbound connections as a next hop sees them (an smtp-server sink counting its connections):
// reuse of one session for several messages (RSET between transactions), the per-connection
// message cap, the idle timeout, close() at stop, and the concurrency limits per destination
// and in total, measured as simultaneous connections at a slow sink.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { waitFor } from '../../helpers/wait.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { fromObject } from '../../../src/config/load.js';
import { silentLogger } from '../../../src/log/logger.js';

const dnsServers: RunningDnsServer[] = [];
const sinks: RunningSink[] = [];
const outbounds: Outbound[] = [];
after(async () => {
  for (const o of outbounds) o.close();
  for (const s of sinks) await s.stop();
  for (const d of dnsServers) await d.stop();
});

/** A sink on `host` and a DNS server sending the given domains to it (one MX name for all). */
async function setup(host: string, domains: string[], sinkOpts: Parameters<typeof startSink>[0] = {}) {
  const sink = await startSink(sinkOpts, 0, host);
  sinks.push(sink);
  const records: Record<string, { MX?: { exchange: string; priority: number }[]; A?: string[] }> = { 'mx.shared.test': { A: [host] } };
  for (const d of domains) records[d] = { MX: [{ exchange: 'mx.shared.test', priority: 10 }] };
  const dns = await startDnsServer({ records });
  dnsServers.push(dns);
  const outbound = (extra: Record<string, unknown> = {}) => {
    const config = fromObject({ hostname: 'mx.example.test', data_dir: '/nonexistent', dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: sink.port, tls: 'none', ...extra } }, null);
    const ob = new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000 } });
    outbounds.push(ob);
    return ob;
  };
  return { sink, outbound };
}

const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);
const send = (ob: Outbound, domain: string, i: number) => ob.deliver(domain, { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: `r${i}@${domain}` }], message: msg(i) });

test('five messages to one MX go over one connection; RSET separates the transactions', async () => {
  const { sink, outbound } = await setup('127.0.0.61', ['reuse.test']);
  const ob = outbound();
  for (let i = 0; i < 5; i++) {
    const r = await send(ob, 'reuse.test', i);
    assert.equal(r.get(`r${i}@reuse.test`)!.status, 'sent');
  }
  assert.equal(sink.messages.length, 5);
  assert.deepEqual(sink.messages.map((m) => m.to[0]), [0, 1, 2, 3, 4].map((i) => `r${i}@reuse.test`));
  assert.equal(sink.connections, 1, 'one connection for all five');
  assert.equal(ob.pool.idleCount, 1);
  // Each transaction had its own envelope (the RSET/MAIL cycle did not mix recipients).
  assert.ok(sink.messages.every((m) => m.to.length === 1));
});

test('outbound.reuse.max_messages caps the messages per connection; max_messages: 1 turns reuse off', async () => {
  const { sink, outbound } = await setup('127.0.0.62', ['cap.test']);
  const ob = outbound({ reuse: { max_messages: 2 } });
  for (let i = 0; i < 5; i++) await send(ob, 'cap.test', i);
  assert.equal(sink.messages.length, 5);
  assert.equal(sink.connections, 3, '2 + 2 + 1 messages');

  const off = outbound({ reuse: { max_messages: 1 } });
  const before = sink.connections;
  for (let i = 0; i < 3; i++) await send(off, 'cap.test', i);
  assert.equal(sink.connections - before, 3);
  assert.equal(off.pool.idleCount, 0);
});

test('an idle connection is closed after outbound.reuse.idle_timeout; the next message opens a new one', async () => {
  const { sink, outbound } = await setup('127.0.0.63', ['idle.test']);
  const ob = outbound({ reuse: { idle_timeout: '300ms' } });
  await send(ob, 'idle.test', 0);
  assert.equal(sink.active, 1, 'kept open after the message');
  const closed = await waitFor(() => sink.active, (n) => n === 0);
  assert.equal(closed, 0, 'the idle connection was closed (QUIT) by us');
  assert.equal(ob.pool.idleCount, 0);
  await send(ob, 'idle.test', 1);
  assert.equal(sink.connections, 2);
  assert.equal(sink.messages.length, 2);
});

test('a connection the next hop closed while idle is replaced without a failure', async () => {
  const { sink, outbound } = await setup('127.0.0.64', ['drop.test']);
  const ob = outbound({ reuse: { idle_timeout: '1h' } });
  await send(ob, 'drop.test', 0);
  assert.equal(ob.pool.idleCount, 1);
  // The next hop restarts: it closes our idle connection (421) and listens again.
  await sink.down();
  await sink.up();
  await waitFor(() => ob.pool.idleCount, (n) => n === 0);
  const r = await send(ob, 'drop.test', 1);
  assert.equal(r.get('r1@drop.test')!.status, 'sent');
  assert.equal(sink.messages.length, 2);
});

test('close() QUITs every idle connection, several to one destination included', async () => {
  const { sink, outbound } = await setup('127.0.0.70', ['many.test'], { dataDelayMs: 200 });
  const ob = outbound({ concurrency: { total: 10, per_domain: 3 }, reuse: { idle_timeout: '1h' } });
  const rs = await Promise.all([0, 1, 2].map((i) => send(ob, 'many.test', i)));
  assert.ok(rs.every((r, i) => r.get(`r${i}@many.test`)!.status === 'sent'));
  assert.equal(ob.pool.idleCount, 3, 'three sessions kept for one destination');
  assert.equal(sink.active, 3);
  ob.close();
  // Every session is closed now (QUIT, then its socket), none left open for the sink to time out.
  assert.equal(await waitFor(() => sink.active, (n) => n === 0, 5000), 0, 'every connection closed');
  assert.equal(await waitFor(() => ob.pool.openCount, (n) => n === 0, 5000), 0);
});

test('per-destination limit: six messages at once to a slow next hop use at most two connections at a time', async () => {
  const { sink, outbound } = await setup('127.0.0.65', ['slow.test'], { dataDelayMs: 300 });
  const ob = outbound({ concurrency: { total: 100, per_domain: 2 } });
  const rs = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => send(ob, 'slow.test', i)));
  assert.ok(rs.every((r, i) => r.get(`r${i}@slow.test`)!.status === 'sent'));
  assert.equal(sink.messages.length, 6);
  assert.equal(sink.maxActive, 2, 'two simultaneous connections, never more');
});

test('total limit: eight messages at once for two destinations use at most three connections at a time', async () => {
  const { sink, outbound } = await setup('127.0.0.66', ['one.test', 'two.test'], { dataDelayMs: 300 });
  const ob = outbound({ concurrency: { total: 3, per_domain: 10 } });
  const jobs = [0, 1, 2, 3].flatMap((i) => [send(ob, 'one.test', i), send(ob, 'two.test', i)]);
  const rs = await Promise.all(jobs);
  assert.ok(rs.every((r) => [...r.values()].every((x) => x.status === 'sent')));
  assert.equal(sink.messages.length, 8);
  assert.equal(sink.maxActive, 3, 'three simultaneous connections, never more');
});

test('total limit counts idle cached connections: a new destination closes an idle one first', async () => {
  const { sink, outbound } = await setup('127.0.0.67', ['first.test', 'second.test'], { dataDelayMs: 200 });
  const ob = outbound({ concurrency: { total: 2, per_domain: 2 }, reuse: { idle_timeout: '1h' } });
  const rs = await Promise.all([0, 1].map((i) => send(ob, 'first.test', i)));
  assert.ok(rs.every((r, i) => r.get(`r${i}@first.test`)!.status === 'sent'));
  assert.equal(ob.pool.idleCount, 2, 'both connections kept for first.test');
  assert.equal(sink.active, 2);
  // Another destination: it cannot use first.test's sessions, and a third connection would
  // exceed the total, so the longest-idle one is closed before it opens.
  const r = await send(ob, 'second.test', 2);
  assert.equal(r.get('r2@second.test')!.status, 'sent');
  assert.equal(sink.connections, 3);
  assert.equal(sink.maxActive, 2, 'never more than two open at the sink');
  assert.equal(ob.pool.openCount, 2);
});

test('per-destination limit counts idle cached connections: the second MX host waits for the first to be closed', async () => {
  // Two MX hosts for one domain; the first defers one of the two recipients (451), so that
  // recipient goes to the second host while the first host's session sits idle.
  const seen: number[] = [];
  const box: { ob?: Outbound } = {};
  const first = await startSink({ rcpt: (a) => (a.startsWith('later@') ? { code: 451, message: '4.3.0 Try the other host' } : null) }, 0, '127.0.0.68');
  const second = await startSink({ rcpt: () => (seen.push(box.ob!.pool.openCount), null) }, first.port, '127.0.0.69');
  sinks.push(first, second);
  const dns = await startDnsServer({ records: { 'two-mx.test': { MX: [{ exchange: 'a.two-mx.test', priority: 10 }, { exchange: 'b.two-mx.test', priority: 20 }] }, 'a.two-mx.test': { A: ['127.0.0.68'] }, 'b.two-mx.test': { A: ['127.0.0.69'] } } });
  dnsServers.push(dns);
  const config = fromObject({ hostname: 'mx.example.test', data_dir: '/nonexistent', dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: first.port, tls: 'none', concurrency: { total: 10, per_domain: 1 }, reuse: { idle_timeout: '1h' } } }, null);
  const ob = (box.ob = new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000 } }));
  outbounds.push(ob);
  const r = await ob.deliver('two-mx.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'now@two-mx.test' }, { address: 'later@two-mx.test' }], message: msg(0) });
  assert.equal(r.get('now@two-mx.test')!.status, 'sent');
  assert.equal(r.get('later@two-mx.test')!.status, 'sent');
  assert.deepEqual(seen, [1], 'one connection open for the destination while the second host was in use');
  assert.equal(first.active, 0, "the first host's idle connection was closed before the second opened");
  assert.equal(first.messages.length + second.messages.length, 2);
});
