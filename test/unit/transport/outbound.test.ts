// Outbound delivery against a loopback DNS server and smtp-server sinks on 127.0.0.x: MX
// preference, fall-over, implicit MX, null MX, per-recipient 4xx/5xx, DSN parameters, dot
// stuffing, 8BITMIME, LMTP per-recipient replies, smarthost AUTH.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { Outbound, parseNexthop } from '../../../src/transport/outbound.js';
import { MxResolver } from '../../../src/transport/mx.js';
import { fromObject } from '../../../src/config/load.js';
import { silentLogger } from '../../../src/log/logger.js';

let dns: RunningDnsServer;
const sinks: RunningSink[] = [];
let port = 0;

const MSG = Buffer.from('From: a@example.test\r\nTo: b@dest.test\r\nSubject: t\r\n\r\nline\r\n.\r\n..two\r\nend\r\n');

async function sink(host: string, opts: Parameters<typeof startSink>[0] = {}): Promise<RunningSink> {
  const s = await startSink(opts, port, host);
  port = s.port;
  sinks.push(s);
  return s;
}

function outbound(extra: Record<string, unknown> = {}) {
  const config = fromObject({ hostname: 'mx.example.test', data_dir: '/nonexistent', dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: port, tls: 'none', ...extra } }, null);
  return new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000 } });
}

before(async () => {
  dns = await startDnsServer({ records: {} });
});
after(async () => {
  for (const s of sinks) await s.stop();
  await dns.stop();
});

test('MX preference order; equal preferences shuffled; each message goes to the best reachable host', async () => {
  const a = await sink('127.0.0.2');
  const b = await sink('127.0.0.3');
  dns.setRecords({
    'dest.test': { MX: [{ exchange: 'mx2.dest.test', priority: 20 }, { exchange: 'mx1.dest.test', priority: 10 }] },
    'mx1.dest.test': { A: ['127.0.0.2'] },
    'mx2.dest.test': { A: ['127.0.0.3'] },
  });
  const ob = outbound();
  const r = await ob.deliver('dest.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'x@dest.test' }, { address: 'y@dest.test' }], message: MSG });
  assert.deepEqual([...r.values()].map((x) => x.status), ['sent', 'sent']);
  assert.equal(a.messages.length, 1, 'one transaction for both recipients, at the preferred MX');
  assert.deepEqual(a.messages[0]!.to, ['x@dest.test', 'y@dest.test']);
  assert.equal(b.messages.length, 0);
  // RFC 5321 §4.5.2: the lone "." line went out stuffed and came back whole.
  assert.equal(a.messages[0]!.data.toString(), MSG.toString());
  assert.equal(r.get('x@dest.test')!.remoteMta, 'dns; mx1.dest.test');

  // Equal preference: both hosts get used over several draws.
  const mx = new MxResolver(createResolver({ servers: [dns.server], timeout: 1000, tries: 1 }), { random: (() => { let i = 0; return () => [0.9, 0.1][i++ % 2]!; })() });
  dns.setRecords({ 'eq.test': { MX: [{ exchange: 'p.eq.test', priority: 5 }, { exchange: 'q.eq.test', priority: 5 }] }, 'p.eq.test': { A: ['127.0.0.2'] }, 'q.eq.test': { A: ['127.0.0.3'] } });
  const first = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const res = await mx.resolve('eq.test');
    assert.equal(res.kind, 'hosts');
    if (res.kind === 'hosts') first.add(res.hosts[0]!.name);
  }
  assert.deepEqual([...first].sort(), ['p.eq.test', 'q.eq.test']);
});

test('fall-over: the first MX is down or answers 4xx, the second takes it', async () => {
  const tempfail = await sink('127.0.0.4', { rcpt: () => ({ code: 451, message: '4.3.0 try later' }) });
  const good = await sink('127.0.0.5');
  dns.setRecords({
    'down.test': { MX: [{ exchange: 'dead.down.test', priority: 1 }, { exchange: 'ok.down.test', priority: 2 }] },
    'dead.down.test': { A: ['127.0.0.9'] }, // nothing listens there
    'ok.down.test': { A: ['127.0.0.5'] },
    'soft.test': { MX: [{ exchange: 'soft1.soft.test', priority: 1 }, { exchange: 'ok.down.test', priority: 2 }] },
    'soft1.soft.test': { A: ['127.0.0.4'] },
  });
  const ob = outbound();
  const r1 = await ob.deliver('down.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'x@down.test' }], message: MSG });
  assert.equal(r1.get('x@down.test')!.status, 'sent');
  const r2 = await ob.deliver('soft.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'y@soft.test' }], message: MSG });
  assert.equal(r2.get('y@soft.test')!.status, 'sent');
  assert.deepEqual(tempfail.rcptSeen, ['y@soft.test']);
  assert.deepEqual(good.messages.map((m) => m.to[0]), ['x@down.test', 'y@soft.test']);
});

test('implicit MX, null MX, no host, and per-recipient 5xx / 4xx', async () => {
  const s = await sink('127.0.0.6', {
    rcpt: (a) => (a.startsWith('bad') ? { code: 550, message: '5.1.1 No such user' } : a.startsWith('later') ? { code: 452, message: '4.2.2 Mailbox full' } : null),
  });
  dns.setRecords({ 'implicit.test': { A: ['127.0.0.6'] }, 'null.test': { MX: [{ exchange: '.', priority: 0 }] } });
  const ob = outbound();
  const r = await ob.deliver('implicit.test', { type: 'mx' }, { mailFrom: '', recipients: [{ address: 'ok@implicit.test' }, { address: 'bad@implicit.test' }, { address: 'later@implicit.test' }], message: MSG });
  assert.equal(r.get('ok@implicit.test')!.status, 'sent');
  assert.deepEqual({ ...r.get('bad@implicit.test')!, remoteMta: undefined }, { status: 'perm', code: 550, enhanced: '5.1.1', text: 'No such user', remote: true, remoteMta: undefined, nextHopDsn: true });
  assert.equal(r.get('later@implicit.test')!.status, 'temp');
  assert.equal(r.get('later@implicit.test')!.enhanced, '4.2.2');
  assert.equal(s.messages.length, 1);
  assert.equal(s.messages[0]!.from, '');

  const n = await ob.deliver('null.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'x@null.test' }], message: MSG });
  assert.deepEqual([n.get('x@null.test')!.status, n.get('x@null.test')!.code, n.get('x@null.test')!.enhanced], ['perm', 556, '5.1.10']);
  const none = await ob.deliver('nowhere.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'x@nowhere.test' }], message: MSG });
  assert.equal(none.get('x@nowhere.test')!.enhanced, '5.1.2');
});

test('DSN parameters go on per recipient; 8-bit body to a host without 8BITMIME fails cleanly', async () => {
  const s = await sink('127.0.0.7');
  const old = await sink('127.0.0.8', { hide: ['8BITMIME', 'DSN'] });
  dns.setRecords({ 'dsn.test': { A: ['127.0.0.7'] }, 'old.test': { A: ['127.0.0.8'] } });
  const ob = outbound();
  const r = await ob.deliver('dsn.test', { type: 'mx' }, {
    mailFrom: 'a@example.test',
    ret: 'HDRS',
    envid: 'env 1',
    recipients: [{ address: 'p@dsn.test', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;orig+2Bp@example.test' }, { address: 'q@dsn.test', notify: ['NEVER'] }],
    message: MSG,
  });
  assert.equal(r.get('p@dsn.test')!.nextHopDsn, true);
  const m = s.messages[0]!;
  assert.equal(m.mailArgs.RET, 'HDRS');
  assert.equal(m.mailArgs.ENVID, 'env 1'); // smtp-server decodes the xtext we sent
  assert.equal(m.rcptArgs[0]!.NOTIFY, 'SUCCESS,FAILURE');
  assert.equal(m.rcptArgs[0]!.ORCPT, 'rfc822;orig+p@example.test'); // sent as received (xtext), decoded by smtp-server
  assert.equal(m.rcptArgs[1]!.NOTIFY, 'NEVER');

  const eight = Buffer.from('Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n', 'latin1');
  const r8 = await ob.deliver('old.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'z@old.test' }], message: eight });
  assert.deepEqual([r8.get('z@old.test')!.status, r8.get('z@old.test')!.enhanced], ['perm', '5.6.3']);
  assert.equal(old.messages.length, 0);
  const r7 = await ob.deliver('old.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'z@old.test' }], message: MSG });
  assert.equal(r7.get('z@old.test')!.nextHopDsn, false);
});

test('routes: LMTP gives one reply per recipient; a smarthost with credentials in the URL', async () => {
  const lmtp = await startSink({ lmtp: true, data: () => null, rcpt: (a) => (a === 'gone@corp.test' ? { code: 550, message: '5.1.1 gone' } : null) });
  sinks.push(lmtp);
  const smart = await startSink({ auth: { user: 'relay user', pass: 'p@ss' } });
  sinks.push(smart);
  const ob = outbound();
  const r = await ob.deliver('corp.test', { type: 'route', nexthop: `lmtp://127.0.0.1:${lmtp.port}`, mode: 'queue', verify: 'none', match: 'corp.test' }, {
    mailFrom: 'a@example.test',
    recipients: [{ address: 'u1@corp.test' }, { address: 'gone@corp.test' }, { address: 'u2@corp.test' }],
    message: MSG,
  });
  assert.deepEqual(['u1@corp.test', 'gone@corp.test', 'u2@corp.test'].map((a) => r.get(a)!.status), ['sent', 'perm', 'sent']);
  assert.deepEqual(lmtp.messages[0]!.to, ['u1@corp.test', 'u2@corp.test']);

  const url = `smtp://relay%20user:p%40ss@127.0.0.1:${smart.port}`;
  assert.deepEqual(parseNexthop(url).auth, { user: 'relay user', pass: 'p@ss' });
  const r2 = await ob.deliver('any.test', { type: 'route', nexthop: url, mode: 'queue', verify: 'none', match: '.' }, { mailFrom: 'a@example.test', recipients: [{ address: 'v@any.test' }], message: MSG });
  assert.equal(r2.get('v@any.test')!.status, 'sent');
  assert.equal(smart.messages.length, 1);
  const bad = await ob.deliver('any.test', { type: 'route', nexthop: `smtp://relay%20user:wrong@127.0.0.1:${smart.port}`, mode: 'queue', verify: 'none', match: '.' }, { mailFrom: 'a@example.test', recipients: [{ address: 'w@any.test' }], message: MSG });
  assert.deepEqual([bad.get('w@any.test')!.status, bad.get('w@any.test')!.enhanced], ['temp', '4.7.8']);
});
