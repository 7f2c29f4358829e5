// auth-results with mailauth against the loopback DNS server (test/helpers/dns-server.ts) serving
// SPF and DMARC TXT records: SPF pass / fail / softfail / none, DMARC pass, reject enforced,
// quarantine, the configured overrides, pct sampling, one Authentication-Results header parsed
// and checked, forged results with our authserv-id removed, and option errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import plugin, { authservIdOf, createAuthResults } from './index.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sievePlugin from '../sieve/index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { createMessage } from '../../src/pipeline/message.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';
import { startDnsServer, type RunningDnsServer } from '../../test/helpers/dns-server.js';

let dns: RunningDnsServer;
before(async () => {
  dns = await startDnsServer({
    records: {
      'sender.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.sender.test': { TXT: ['v=DMARC1; p=reject'] },
      'soft.test': { TXT: ['v=spf1 ip4:192.0.2.1 ~all'] },
      '_dmarc.soft.test': { TXT: ['v=DMARC1; p=quarantine'] },
      'monitor.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.monitor.test': { TXT: ['v=DMARC1; p=none'] },
      'half.test': { TXT: ['v=spf1 -all'] },
      '_dmarc.half.test': { TXT: ['v=DMARC1; p=reject; pct=50'] },
      'nothing.test': { A: ['192.0.2.99'] },
    },
  });
});
after(async () => {
  await dns?.stop();
});

const GLOBAL = () => ({ hostname: 'mx.example.test', dns: { servers: [dns.server], timeout: '2s', tries: 1 } });

const msg = (from: string, extra = '') => `${extra}From: Someone <${from}>\nTo: rcpt@example.test\nSubject: hi\nDate: Fri, 27 Nov 2026 10:00:00 +0000\nMessage-ID: <1@x.test>\n\nHello.\n`;

/** Authentication-Results (RFC 8601 §2.2) split into its authserv-id and method → result. */
function parseAR(value: string): { id: string; results: Record<string, string>; props: string[] } {
  const [id, ...parts] = value.split(';').map((s) => s.trim());
  const results: Record<string, string> = {};
  const props: string[] = [];
  for (const p of parts) {
    const m = /^([a-z-]+)=([a-z]+)\b(.*)$/i.exec(p);
    if (m) {
      results[m[1]!.toLowerCase()] = m[2]!.toLowerCase();
      props.push(...[...m[3]!.matchAll(/([a-z]+\.[a-z-]+)=(\S+)/gi)].map((x) => `${x[1]}=${x[2]}`));
    }
  }
  return { id: id!, results, props };
}

async function run(from: string, ip: string, options: Record<string, unknown> = {}, extraHeaders = '', def = plugin) {
  const h = testPlugin(def, options, { global: GLOBAL() });
  h.newConnection({ remoteAddress: ip, helo: 'client.test' });
  const r = await h.run('data', { tx: { mailFrom: from }, message: msg(from, extraHeaders) });
  await h.close();
  const ar = r.message!.headers.get('Authentication-Results');
  return { r, ar, parsed: ar.map(parseAR) };
}

test('SPF pass, DMARC pass (SPF aligned): one Authentication-Results naming us, and Received-SPF', async () => {
  const { r, ar, parsed } = await run('a@sender.test', '192.0.2.1');
  assert.equal(r.verdict.kind, 'next');
  assert.equal(ar.length, 1);
  assert.equal(parsed[0]!.id, 'mx.example.test');
  assert.equal(parsed[0]!.results.spf, 'pass');
  assert.equal(parsed[0]!.results.dmarc, 'pass');
  assert.equal(parsed[0]!.results.dkim, 'none');
  assert.ok(parsed[0]!.props.includes('smtp.mailfrom=a@sender.test'), parsed[0]!.props.join(' '));
  assert.ok(parsed[0]!.props.includes('header.from=sender.test'));
  assert.match(r.message!.headers.get('Received-SPF')[0]!, /^pass \(mx\.example\.test: domain of a@sender\.test designates 192\.0\.2\.1 as permitted sender\)/);
  assert.match(r.message!.render().toString(), /^Authentication-Results: mx\.example\.test;/);
  assert.equal(r.trace[0]!.detail, 'spf=pass dkim=none dmarc=pass (p=reject) arc=none');
});

test('mail a content filter hands back with XFORWARD: SPF is asked about the client it named, not the filter; unknown address → not checked', async () => {
  const h = testPlugin(plugin, {}, { global: GLOBAL() });
  h.newConnection({ remoteAddress: '203.0.113.5', helo: 'filter.test' });
  const r = await h.run('data', { tx: { mailFrom: 'a@sender.test' }, forwarded: { address: '192.0.2.1', helo: 'client.test' }, message: msg('a@sender.test') });
  assert.equal(r.verdict.kind, 'next');
  const ar = parseAR(r.message!.headers.get('Authentication-Results')[0]!);
  assert.equal(ar.results.spf, 'pass');
  assert.ok(ar.props.includes('smtp.helo=client.test'), ar.props.join(' '));
  assert.match(r.message!.headers.get('Received-SPF')[0]!, /client-ip=192\.0\.2\.1;/);
  const unknown = await h.run('data', { tx: { mailFrom: 'a@sender.test' }, forwarded: { hostname: 'client.test' }, message: msg('a@sender.test') });
  assert.equal(unknown.verdict.kind, 'next');
  assert.deepEqual(unknown.message!.headers.get('Authentication-Results'), []);
  await h.close();
});

test('SPF fail with DMARC p=reject: refused with 550 5.7.1 naming the domain', async () => {
  const { r } = await run('a@sender.test', '203.0.113.5');
  assert.deepEqual(r.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Rejected by the DMARC policy of sender.test' });
  assert.equal(r.trace[0]!.detail, 'spf=fail dkim=none dmarc=fail (p=reject) arc=none');
  assert.equal(r.trace.at(-1)!.verdict, 'reject');
});

test('SPF softfail with DMARC p=quarantine: quarantined into Junk, header says softfail', async () => {
  const { r, parsed } = await run('a@soft.test', '203.0.113.5');
  assert.deepEqual(r.verdict, { kind: 'quarantine', folder: 'Junk', reason: 'dmarc: soft.test p=quarantine' });
  assert.equal(parsed[0]!.results.spf, 'softfail');
  assert.equal(parsed[0]!.results.dmarc, 'fail');
});

test('SPF fail with DMARC p=none: delivered, results in the header only', async () => {
  const { r, parsed } = await run('a@monitor.test', '203.0.113.5');
  assert.equal(r.verdict.kind, 'next');
  assert.equal(parsed[0]!.results.spf, 'fail');
  assert.equal(parsed[0]!.results.dmarc, 'fail');
});

test('no SPF and no DMARC record: spf=none dmarc=none, delivered', async () => {
  const { r, parsed } = await run('a@nothing.test', '203.0.113.5');
  assert.equal(r.verdict.kind, 'next');
  assert.equal(parsed[0]!.results.spf, 'none');
  assert.equal(parsed[0]!.results.dmarc, 'none');
});

test('overrides: dmarc_reject quarantine or none', async () => {
  const q = await run('a@sender.test', '203.0.113.5', { dmarc_reject: 'quarantine', quarantine_folder: 'Suspect' });
  assert.deepEqual(q.r.verdict, { kind: 'quarantine', folder: 'Suspect', reason: 'dmarc: sender.test p=reject' });
  const n = await run('a@sender.test', '203.0.113.5', { dmarc_reject: 'none' });
  assert.equal(n.r.verdict.kind, 'next');
  assert.match(n.r.trace[0]!.detail ?? '', /policy not applied \(configured\)$/);
  const soft = await run('a@soft.test', '203.0.113.5', { dmarc_quarantine: 'none' });
  assert.equal(soft.r.verdict.kind, 'next');
});

test('pct=50: the policy applies to the sampled half (RFC 7489 §6.3), or to all with honour_pct false', async () => {
  const applied = await run('a@half.test', '203.0.113.5', {}, '', createAuthResults(() => 0.3));
  assert.equal(applied.r.verdict.kind, 'reject');
  const skipped = await run('a@half.test', '203.0.113.5', {}, '', createAuthResults(() => 0.7));
  assert.equal(skipped.r.verdict.kind, 'next');
  assert.match(skipped.r.trace[0]!.detail ?? '', /policy not applied \(pct sampling\)$/);
  const all = await run('a@half.test', '203.0.113.5', { honour_pct: false }, '', createAuthResults(() => 0.7));
  assert.equal(all.r.verdict.kind, 'reject');
});

test('forged Authentication-Results with our authserv-id are removed; other servers\' are kept', async () => {
  const forged = 'Authentication-Results: MX.example.test; spf=pass smtp.mailfrom=a@sender.test; dmarc=pass\nAuthentication-Results: other.example; spf=fail\n';
  const { ar, parsed } = await run('a@monitor.test', '203.0.113.5', {}, forged);
  assert.equal(ar.length, 2);
  assert.deepEqual(parsed.map((p) => p.id.toLowerCase()), ['mx.example.test', 'other.example']);
  assert.equal(parsed[0]!.results.spf, 'fail', 'ours, not the forged pass');
});

test('authserv_id overrides the hostname; trusted clients are not checked unless check_relaying', async () => {
  const { parsed } = await run('a@sender.test', '192.0.2.1', { authserv_id: 'auth.example.test' });
  assert.equal(parsed[0]!.id, 'auth.example.test');
  const h = testPlugin(plugin, {}, { global: GLOBAL() });
  h.newConnection({ remoteAddress: '203.0.113.5', relaying: true });
  const r = await h.run('data', { tx: { mailFrom: 'a@sender.test' }, message: msg('a@sender.test') });
  assert.equal(r.verdict.kind, 'next');
  assert.deepEqual(r.message!.headers.get('Authentication-Results'), []);
  assert.equal(r.trace[0]!.detail, 'not checked: authenticated or trusted client');
  await h.close();
});

test('the gateway Sieve sees the results as environment items vnd.postern.spf/dkim/dmarc/arc', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-ar-sieve-'));
  const script = join(dir, 'gw.sieve');
  await writeFile(script, 'require ["environment", "editheader"];\nif environment "vnd.postern.dmarc" "pass" { addheader "X-Dmarc-Seen" "pass"; }\nif environment "vnd.postern.spf" "fail" { addheader "X-Spf-Seen" "fail"; }\n');
  const check = async (ip: string) => {
    const message = createMessage(Buffer.from(msg('a@monitor.test').replace(/\n/g, '\r\n')));
    const ar = testPlugin(plugin, {}, { global: GLOBAL() });
    ar.newConnection({ remoteAddress: ip });
    await ar.run('data', { tx: { mailFrom: 'a@monitor.test' }, message });
    await ar.close();
    assert.deepEqual(scanResults(message)?.auth?.dmarc, ip === '192.0.2.1' ? 'pass' : 'fail');
    const sv = testPlugin(sievePlugin, { scripts: [script] }, { global: GLOBAL() });
    await sv.run('data', { tx: { mailFrom: 'a@monitor.test' }, message });
    await sv.close();
    return message.headers;
  };
  const pass = await check('192.0.2.1');
  assert.deepEqual(pass.get('X-Dmarc-Seen'), ['pass']);
  assert.deepEqual(pass.get('X-Spf-Seen'), []);
  const fail = await check('203.0.113.5');
  assert.deepEqual(fail.get('X-Dmarc-Seen'), []);
  assert.deepEqual(fail.get('X-Spf-Seen'), ['fail']);
  await rm(dir, { recursive: true, force: true });
});

test('authservIdOf reads the first token (RFC 8601 §2.2)', () => {
  assert.equal(authservIdOf('mx.example.test; spf=pass'), 'mx.example.test');
  assert.equal(authservIdOf(' MX.Example.Test 1; none'), 'mx.example.test');
  assert.equal(authservIdOf('mx.example.test'), 'mx.example.test');
});

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { dmarc_reject: 'bounce' }), /auth-results\.dmarc_reject/);
  assert.throws(() => testPlugin(plugin, { authserv_id: 'not a host; x' }), /auth-results\.authserv_id: expected a host name/);
  assert.throws(() => testPlugin(plugin, { min_rsa_bits: 256 }), /auth-results\.min_rsa_bits/);
  assert.throws(() => testPlugin(plugin, { spf: false }), /auth-results.*spf/);
});
