// ARC (RFC 8617) with real chains: a forwarder (forwarder.test, then relay.test for a second hop)
// authenticates a message and seals it with mailauth's sealMessage, with keys published on the
// loopback DNS server (test/helpers/dns-server.ts); the auth-results plugin then verifies the
// chain. A valid chain of one or two hops gives arc=pass; the body changed after sealing (the
// ARC-Message-Signature no longer matches, RFC 8617 §5.2) or a changed ARC-Seal (§5.1.1) gives
// arc=fail. The result is in our Authentication-Results header, in the trace, and in the gateway
// Sieve's environment item vnd.postern.arc.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authenticate, sealMessage, type ARCSealOptions } from 'mailauth';
import plugin from './index.js';
import sievePlugin from '../sieve/index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { createMessage } from '../../src/pipeline/message.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';
import { startDnsServer, type RunningDnsServer } from '../../test/helpers/dns-server.js';

/** One sealer's key: the private PEM, and the DNS record (RFC 6376 §3.6.1 p= is the DER SPKI). */
function sealerKey() {
  const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    pem: k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    txt: `v=DKIM1; k=rsa; p=${k.publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`,
  };
}
const FORWARDER = { domain: 'forwarder.test', selector: 'arc2026', ...sealerKey() };
const RELAY = { domain: 'relay.test', selector: 'arc2026', ...sealerKey() };

let dns: RunningDnsServer;
let resolver: Resolver;
let dir: string;
before(async () => {
  dns = await startDnsServer({
    records: {
      [`${FORWARDER.selector}._domainkey.${FORWARDER.domain}`]: { TXT: [FORWARDER.txt] },
      [`${RELAY.selector}._domainkey.${RELAY.domain}`]: { TXT: [RELAY.txt] },
      'origin.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    },
  });
  resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([dns.server]);
  dir = await mkdtemp(join(tmpdir(), 'postern-arc-'));
});
after(async () => {
  await dns?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const GLOBAL = () => ({ hostname: 'mx.example.test', dns: { servers: [dns.server], timeout: '2s', tries: 1 } });

const ORIGINAL = Buffer.from(
  'From: Someone <a@origin.test>\r\nTo: list@forwarder.test\r\nSubject: forwarded\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <arc-1@origin.test>\r\n\r\nHello through a forwarder.\r\n',
);

/**
 * What a forwarder does (RFC 8617 §5.1): authenticate what it received (including the chain so
 * far), then add its ARC set, instance i = previous + 1, cv = the chain's result.
 */
async function seal(message: Buffer, sealer: typeof FORWARDER, clientIp: string): Promise<Buffer> {
  const { arc } = await authenticate(message, {
    ip: clientIp,
    helo: 'client.test',
    mta: `mx.${sealer.domain}`,
    sender: 'a@origin.test',
    resolver: (name: string, rrtype: string) => resolver.resolve(name, rrtype),
    disableBimi: true,
  } as Parameters<typeof authenticate>[1]);
  const a = arc as unknown as { authResults: string; status: { result: string } };
  // authResults and cv are sealMessage options its typings do not list (README "Sealing After Modifications").
  const options = { signingDomain: sealer.domain, selector: sealer.selector, privateKey: sealer.pem, authResults: a.authResults, cv: a.status.result };
  const headers = await sealMessage(message, options as ARCSealOptions);
  return Buffer.concat([headers, message]);
}

/** Runs auth-results on a message arriving from `ip`; returns the verdict, trace, our AR header and the message. */
async function check(raw: Buffer, ip = '198.51.100.7') {
  const message = createMessage(raw);
  const h = testPlugin(plugin, {}, { global: GLOBAL() });
  h.newConnection({ remoteAddress: ip, helo: 'mx.forwarder.test' });
  const r = await h.run('data', { tx: { mailFrom: 'bounces@forwarder.test' }, message });
  await h.close();
  const ar = message.headers.get('Authentication-Results').find((v) => v.toLowerCase().startsWith('mx.example.test'));
  const arc = /\barc=([a-z]+)/i.exec(ar ?? '')?.[1];
  return { r, ar, arc, message };
}

/** Replaces the first occurrence of `from` in the header named `name` (tampering after sealing). */
function tamperHeader(raw: Buffer, name: string, edit: (value: string) => string): Buffer {
  const text = raw.toString('latin1');
  const re = new RegExp(`^${name}:[^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*`, 'im');
  const m = re.exec(text);
  assert.ok(m, `${name} present`);
  const changed = edit(m[0]);
  assert.notEqual(changed, m[0], 'the edit changed something');
  return Buffer.from(text.slice(0, m.index) + changed + text.slice(m.index + m[0].length), 'latin1');
}

test('one ARC set sealed by the forwarder verifies: arc=pass in our header and in the trace', async () => {
  const sealed = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  assert.match(sealed.toString(), /^ARC-Seal: i=1; .*cv=none/m);
  const { r, ar, arc } = await check(sealed);
  assert.equal(r.verdict.kind, 'next');
  assert.equal(arc, 'pass', ar);
  assert.match(r.trace[0]!.detail ?? '', / arc=pass$/);
});

test('two ARC sets (forwarder, then a relay sealing with cv=pass) verify: arc=pass', async () => {
  const once = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  const twice = await seal(once, RELAY, '198.51.100.7');
  assert.match(twice.toString(), /^ARC-Seal: i=2; .*cv=pass/m);
  const { arc, ar } = await check(twice, '203.0.113.9');
  assert.equal(arc, 'pass', ar);
});

test('the body changed after sealing: the ARC-Message-Signature fails, arc=fail', async () => {
  const sealed = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  const tampered = Buffer.from(sealed.toString('latin1').replace('Hello through a forwarder.', 'Hello through a FORWARDER.'), 'latin1');
  assert.notDeepEqual(tampered, sealed);
  const { r, arc, ar } = await check(tampered);
  assert.equal(arc, 'fail', ar);
  // mailauth's reason: the AMS of instance 1 does not verify.
  assert.match(ar ?? '', /arc=fail \(i=1 no valid signature\)/);
  assert.match(r.trace[0]!.detail ?? '', / arc=fail$/);
});

test('the ARC-Seal signature changed after sealing: arc=fail', async () => {
  const sealed = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  // Flip one base64 character of the seal's b= (the signature over the ARC sets, RFC 8617 §4.1.3).
  const tampered = tamperHeader(sealed, 'ARC-Seal', (v) => v.replace(/(\bb=\s*)([A-Za-z0-9+/])/, (_, pre: string, c: string) => `${pre}${c === 'A' ? 'B' : 'A'}`));
  const { arc, ar } = await check(tampered);
  assert.equal(arc, 'fail', ar);
  assert.match(ar ?? '', /arc=fail \(i=1 seal signature validation failed\)/);
});

test('the ARC-Seal claiming another chain validation (cv=pass at i=1) after sealing: arc=fail', async () => {
  const sealed = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  const tampered = tamperHeader(sealed, 'ARC-Seal', (v) => v.replace('cv=none', 'cv=pass'));
  const { arc, ar } = await check(tampered);
  assert.equal(arc, 'fail', ar);
  assert.match(ar ?? '', /arc=fail \(i=1 cv= ?pass\)/);
});

test('a message without ARC headers: no arc= in the header, arc=none in the trace', async () => {
  const { r, arc, ar } = await check(ORIGINAL, '192.0.2.1');
  assert.equal(arc, undefined, ar);
  assert.match(r.trace[0]!.detail ?? '', / arc=none$/);
});

test('the gateway Sieve sees the ARC result as environment item vnd.postern.arc', async () => {
  const script = join(dir, 'arc.sieve');
  await writeFile(script, 'require ["environment", "editheader"];\nif environment "vnd.postern.arc" "pass" { addheader "X-Arc-Seen" "pass"; }\nif environment "vnd.postern.arc" "fail" { addheader "X-Arc-Seen" "fail"; }\n');
  const sieveSees = async (raw: Buffer) => {
    const { message } = await check(raw);
    const sv = testPlugin(sievePlugin, { scripts: [script] }, { global: GLOBAL() });
    await sv.run('data', { tx: { mailFrom: 'bounces@forwarder.test' }, message });
    await sv.close();
    return { seen: message.headers.get('X-Arc-Seen'), recorded: scanResults(message)?.auth?.arc };
  };
  const sealed = await seal(ORIGINAL, FORWARDER, '192.0.2.1');
  assert.deepEqual(await sieveSees(sealed), { seen: ['pass'], recorded: 'pass' });
  const tampered = Buffer.from(sealed.toString('latin1').replace('Hello through', 'Goodbye through'), 'latin1');
  assert.deepEqual(await sieveSees(tampered), { seen: ['fail'], recorded: 'fail' });
});
