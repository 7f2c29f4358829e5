// dkim-sign: sign → verify round trips with RSA-2048 and Ed25519 keys (our signer, mailauth's
// verifier through the auth-results plugin, public keys served by the loopback DNS server, a
// DMARC p=reject domain so the signature must carry it), tampering detected, keys from a file,
// from config text and from the store, which mail is signed, and bad keys failing at start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import plugin, { fromDomain } from './index.js';
import authResults from '../auth-results/index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { createMessage } from '../../src/pipeline/message.js';
import { startDnsServer, type RunningDnsServer } from '../../test/helpers/dns-server.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ed = generateKeyPairSync('ed25519');
const rsaPem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const edPem = ed.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
// RFC 6376 §3.6.1: p= is the DER SubjectPublicKeyInfo for RSA; RFC 8463 §4.2: the raw 32-octet key for Ed25519.
const rsaP = rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const edP = ed.publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');

let dns: RunningDnsServer;
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-dkim-'));
  await writeFile(join(dir, 'rsa.pem'), rsaPem);
  dns = await startDnsServer({
    records: {
      'rsa2026._domainkey.signed.test': { TXT: [`v=DKIM1; k=rsa; p=${rsaP}`] },
      'ed2026._domainkey.ed.test': { TXT: [`v=DKIM1; k=ed25519; p=${edP}`] },
      'store._domainkey.stored.test': { TXT: [`v=DKIM1; k=rsa; p=${rsaP}`] },
      // SPF never passes for these domains from the test client: DMARC can only pass via DKIM.
      'signed.test': { TXT: ['v=spf1 -all'] },
      'ed.test': { TXT: ['v=spf1 -all'] },
      'stored.test': { TXT: ['v=spf1 -all'] },
      '_dmarc.signed.test': { TXT: ['v=DMARC1; p=reject; adkim=s'] },
      '_dmarc.ed.test': { TXT: ['v=DMARC1; p=reject'] },
      '_dmarc.stored.test': { TXT: ['v=DMARC1; p=reject'] },
    },
  });
});
after(async () => {
  await dns?.stop();
  await rm(dir, { recursive: true, force: true });
});

const msg = (from: string) =>
  `From: Alice <alice@${from}>\nTo: bob@remote.example\nSubject: Quarterly numbers\nDate: Fri, 27 Nov 2026 10:00:00 +0000\nMessage-ID: <q1@${from}>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nThe numbers are in.\r\nRegards,  Alice\n`;

const KEYS = [
  { domain: 'signed.test', selector: 'rsa2026', private_key_file: '' },
  { domain: 'ed.test', selector: 'ed2026', private_key: edPem },
];
const keys = () => [{ ...KEYS[0]!, private_key_file: join(dir, 'rsa.pem') }, KEYS[1]!];

/** Signs as an authenticated submission would be signed; returns the queued bytes. */
async function signed(domain: string, options: Record<string, unknown> = { keys: keys() }, store?: (s: import('../../src/store/store.js').Store) => Promise<void>) {
  const h = testPlugin(plugin, options);
  if (store) await store(h.store);
  h.newConnection({ remoteAddress: '192.0.2.50', authUser: `alice@${domain}`, relaying: true });
  const r = await h.run('queue', { message: msg(domain) });
  await h.close();
  return { r, bytes: r.message!.render() };
}

/** Verifies as a receiving MX on the other side: mailauth through auth-results. */
async function verify(bytes: Buffer, domain: string) {
  const h = testPlugin(authResults, {}, { global: { hostname: 'mx.remote.example', dns: { servers: [dns.server], timeout: '2s', tries: 1 } } });
  h.newConnection({ remoteAddress: '203.0.113.9', helo: 'out.sender.test' });
  const r = await h.run('data', { tx: { mailFrom: `alice@${domain}` }, message: createMessage(bytes) });
  await h.close();
  return { verdict: r.verdict, ar: r.message!.headers.get('Authentication-Results')[0] ?? '' };
}

test('RSA-2048 round trip: signed with d= the From domain, verified by mailauth, DMARC p=reject passes via DKIM', async () => {
  const { r, bytes } = await signed('signed.test');
  const sig = r.message!.headers.get('DKIM-Signature')[0]!;
  assert.match(sig, /\ba=rsa-sha256;/);
  assert.match(sig, /\bd=signed\.test;/);
  assert.match(sig, /\bs=rsa2026;/);
  assert.match(sig, /\bc=relaxed\/relaxed;/);
  assert.match(sig, /\bh=[^;]*\bFrom\b/i);
  assert.match(bytes.toString(), /^DKIM-Signature: /);
  assert.equal(r.trace[0]!.detail, 'signed: d=signed.test s=rsa2026 a=rsa-sha256');
  const v = await verify(bytes, 'signed.test');
  assert.equal(v.verdict.kind, 'next', v.ar);
  assert.match(v.ar, /dkim=pass [^;]*header\.[id]=@?signed\.test/);
  assert.match(v.ar, /dmarc=pass/);
  assert.match(v.ar, /spf=fail/);
});

test('Ed25519 round trip (RFC 8463)', async () => {
  const { r, bytes } = await signed('ed.test');
  assert.match(r.message!.headers.get('DKIM-Signature')[0]!, /\ba=ed25519-sha256;/);
  const v = await verify(bytes, 'ed.test');
  assert.equal(v.verdict.kind, 'next', v.ar);
  assert.match(v.ar, /dkim=pass/);
  assert.match(v.ar, /dmarc=pass/);
});

test('tampering breaks the signature: a changed Subject or body fails DKIM, and DMARC p=reject refuses it', async () => {
  const { bytes } = await signed('signed.test');
  for (const tampered of [bytes.toString().replace('Subject: Quarterly numbers', 'Subject: Quarterly numbers!'), bytes.toString().replace('The numbers are in.', 'The numbers are out.')]) {
    const v = await verify(Buffer.from(tampered), 'signed.test');
    assert.match(v.ar, /dkim=(fail|neutral)/);
    assert.deepEqual(v.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Rejected by the DMARC policy of signed.test' });
  }
});

test('a key from the store (hash dkim:keys) signs a domain that has none in config', async () => {
  const { r, bytes } = await signed('stored.test', { keys: keys() }, (s) => s.hset('dkim:keys', 'stored.test', JSON.stringify({ selector: 'store', private_key: rsaPem })));
  assert.equal(r.trace[0]!.detail, 'signed: d=stored.test s=store a=rsa-sha256');
  assert.match((await verify(bytes, 'stored.test')).ar, /dkim=pass/);
  // An unusable store key: unsigned, traced, not a failure of the message.
  const bad = await signed('stored.test', { keys: [] }, (s) => s.hset('dkim:keys', 'stored.test', JSON.stringify({ selector: 'store', private_key: 'nope' })));
  assert.equal(bad.r.verdict.kind, 'next');
  assert.deepEqual(bad.r.message!.headers.get('DKIM-Signature'), []);
  assert.match(bad.r.trace[0]!.detail ?? '', /^store key for stored\.test unusable: not a PEM private key/);
});

test('what is signed: relaying clients only by default; no key for the From domain → unsigned, traced', async () => {
  const h = testPlugin(plugin, { keys: keys() });
  h.newConnection({ remoteAddress: '203.0.113.9' });
  const anon = await h.run('queue', { message: msg('signed.test') });
  assert.deepEqual(anon.message!.headers.get('DKIM-Signature'), [], 'inbound mail is not signed');
  await h.close();
  const all = testPlugin(plugin, { keys: keys(), sign: 'all' });
  all.newConnection({ remoteAddress: '203.0.113.9' });
  assert.equal((await all.run('queue', { message: msg('signed.test') })).message!.headers.get('DKIM-Signature').length, 1);
  await all.close();
  const { r } = await signed('unknown.test');
  assert.deepEqual(r.message!.headers.get('DKIM-Signature'), []);
  assert.equal(r.trace[0]!.detail, 'not signed: no key for unknown.test');
});

test('fromDomain reads the From address', () => {
  assert.equal(fromDomain('Alice <alice@Example.ORG>'), 'example.org');
  assert.equal(fromDomain('alice@example.org'), 'example.org');
  assert.equal(fromDomain('"a@b" <alice@example.org>'), 'example.org');
  assert.equal(fromDomain('undisclosed'), null);
});

test('bad keys fail at start with the key named; bad options with key paths', async () => {
  const weak = generateKeyPairSync('rsa', { modulusLength: 768 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ keys: [{ domain: 'a.test', selector: 's', private_key: weak }] }, /keys\.0 \(a\.test\): RSA key of 768 bits: at least 1024/],
    [{ keys: [{ domain: 'a.test', selector: 's', private_key: 'garbage' }] }, /keys\.0 \(a\.test\): not a PEM private key/],
    [{ keys: [{ domain: 'a.test', selector: 's', private_key_file: join(dir, 'missing.pem') }] }, /keys\.0: cannot read .*missing\.pem/],
  ];
  for (const [options, re] of cases) {
    const h = testPlugin(plugin, options);
    await assert.rejects(h.run('queue', { message: msg('a.test') }), re);
    await h.close();
  }
  assert.throws(() => testPlugin(plugin, { keys: [{ domain: 'a.test', selector: 's' }] }), /dkim-sign\.keys\.0\.private_key_file: give exactly one/);
  assert.throws(() => testPlugin(plugin, { keys: [{ domain: 'not a domain', selector: 's', private_key: 'x' }] }), /dkim-sign\.keys\.0\.domain: expected a domain/);
  assert.throws(() => testPlugin(plugin, { keys: [{ domain: 'a.test', selector: 'bad selector', private_key: 'x' }] }), /dkim-sign\.keys\.0\.selector/);
  assert.throws(() => testPlugin(plugin, { canonicalization: 'simple/simple' }), /dkim-sign\.canonicalization/);
});
