// RFC 6152 §3 downgrade: an 8-bit message for a next hop without 8BITMIME is converted to 7 bit
// (text parts quoted-printable, others base64, multipart and message/rfc822 walked), and what
// Python's `email` decodes from the converted message equals what it decodes from the original.
// Messages that cannot be converted (8-bit header fields, 8-bit bytes under a quoted-printable
// label) still come back as 554 5.6.3. End to end: an smtp-server sink that hides 8BITMIME.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { downgradeTo7bit, encodeQuotedPrintable } from '../../../src/transport/downgrade.js';
import { is8bit } from '../../../src/transport/smtp-client.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { fromObject } from '../../../src/config/load.js';
import { silentLogger } from '../../../src/log/logger.js';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { pythonJson } from '../../helpers/python.js';

// Every leaf part as Python's email package sees it: type, encoding, decoded payload (hex, line
// ends normalised to LF since quopri decodes a hard CRLF to LF).
const LEAVES = `
import sys, json, base64, email, email.policy
m = email.message_from_bytes(base64.b64decode(sys.stdin.read()), policy=email.policy.compat32)
out = []
for p in m.walk():
    if p.is_multipart():
        continue
    payload = p.get_payload(decode=True)
    if payload is None:
        payload = b""
    out.append([p.get_content_type(), (p.get("Content-Transfer-Encoding") or "7bit").lower(), payload.replace(b"\\r\\n", b"\\n").hex()])
print(json.dumps(out))
`;

// The bytes go over stdin in base64: the helper writes its input as UTF-8 text.
const leaves = (msg: Buffer) => pythonJson<[string, string, string][]>(LEAVES, [], { input: msg.toString('base64') });

const utf8 = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
const long = 'é'.repeat(40) + ' = sign, trailing space ';
const binary = Buffer.from([0x00, 0x80, 0xff, 0x41, 0xfe, 0x20, 0x09, 0x7f, 0xc3]).toString('latin1');

// Built in latin1 so each char is one byte on the wire.
const MIXED = Buffer.from(
  [
    'From: a@example.test',
    'To: b@old.test',
    'Subject: 7-bit header',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="outer b"',
    '',
    'This is a MIME message.',
    '--outer b',
    'Content-Type: multipart/alternative; boundary=inner',
    'Content-Transfer-Encoding: 8bit',
    '',
    '--inner',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    utf8(`Grüße aus Köln`),
    '.',
    utf8(long),
    'tab\tend\t',
    '--inner',
    'Content-Type: text/html; charset=utf-8',
    '',
    utf8('<p>naïve café</p>'),
    '--inner--',
    '',
    '--outer b',
    'Content-Type: application/octet-stream',
    'Content-Transfer-Encoding: binary',
    '',
    binary,
    '--outer b',
    'Content-Type: message/rfc822',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Subject: inner',
    'Content-Type: text/plain; charset=iso-8859-1',
    '',
    'ol\xe9',
    '--outer b',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'plain ascii part',
    '--outer b--',
    'epilogue',
    '',
  ].join('\r\n'),
  'latin1',
);

test('multipart: 8-bit text to quoted-printable, binary to base64, nested parts walked; Python decodes the same text', async () => {
  const r = downgradeTo7bit(MIXED);
  assert.ok(r.ok, r.ok ? '' : r.reason);
  assert.equal(is8bit(r.message), false, 'no 8-bit octet left');
  const text = r.message.toString('latin1');
  for (const line of text.split('\r\n')) assert.ok(line.length <= 998, 'RFC 5322 line limit');
  // The ASCII part and the structure outside the converted parts are untouched.
  assert.ok(text.includes('This is a MIME message.\r\n--outer b\r\n'));
  assert.ok(text.includes('\r\n--outer b--\r\nepilogue\r\n'));
  assert.match(text, /Content-Type: multipart\/alternative; boundary=inner\r\nContent-Transfer-Encoding: 7bit\r\n/);

  const before = await leaves(MIXED);
  const after = await leaves(r.message);
  assert.equal(after.length, 5);
  assert.deepEqual(
    after.map(([t, cte]) => [t, cte]),
    [
      ['text/plain', 'quoted-printable'],
      ['text/html', 'quoted-printable'],
      ['application/octet-stream', 'base64'],
      ['text/plain', 'quoted-printable'], // inside message/rfc822
      ['text/plain', '7bit'],
    ],
  );
  assert.deepEqual(
    after.map((l) => l[2]),
    before.map((l) => l[2]),
    'every decoded payload equals the original',
  );
  // The first part decodes to the exact UTF-8 text, with its lone "." line.
  assert.equal(Buffer.from(after[0]![2], 'hex').toString('utf8'), `Grüße aus Köln\n.\n${long}\ntab\tend\t`);
});

test('a message without MIME fields: body to quoted-printable, labelled text/plain; charset=unknown-8bit', async () => {
  const msg = Buffer.from('Subject: plain\r\n\r\ncaf\xe9 cr\xe8me\r\nline two\r\n', 'latin1');
  const r = downgradeTo7bit(msg);
  assert.ok(r.ok);
  assert.equal(r.message.toString(), 'Subject: plain\r\nContent-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n\r\ncaf=E9 cr=E8me\r\nline two\r\n');
  const [leaf] = await leaves(r.message);
  assert.equal(Buffer.from(leaf![2], 'hex').toString('latin1'), 'caf\xe9 cr\xe8me\nline two\n');
});

test('a 7-bit message is returned unchanged', () => {
  const msg = Buffer.from('Subject: x\r\n\r\nhello\r\n');
  const r = downgradeTo7bit(msg);
  assert.ok(r.ok);
  assert.ok(r.message.equals(msg));
});

test('cannot convert: 8-bit header, 8-bit under quoted-printable or base64, 8-bit preamble, missing boundary', () => {
  const cases: [string, RegExp][] = [
    ['Subject: caf\xe9\r\n\r\nbody \xe9\r\n', /header/],
    ['Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\xe9\r\n', /labelled quoted-printable/],
    ['Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n\xe9\r\n', /labelled base64/],
    ['Content-Type: multipart/mixed; boundary=b\r\n\r\npre \xe9\r\n--b\r\n\r\nx\r\n--b--\r\n', /preamble/],
    ['Content-Type: multipart/mixed\r\n\r\n\xe9\r\n', /boundary/],
    ['Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nSubject: \xe9\r\n\r\nx\r\n--b--\r\n', /header/],
    ['Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uue\r\n\r\n\xe9\r\n', /unknown Content-Transfer-Encoding/],
  ];
  for (const [raw, why] of cases) {
    const r = downgradeTo7bit(Buffer.from(raw, 'latin1'));
    assert.equal(r.ok, false, raw);
    if (!r.ok) assert.match(r.reason, why, raw);
  }
});

test('quoted-printable: 76-character lines, soft breaks, "=" and trailing white space encoded', () => {
  const qp = encodeQuotedPrintable(Buffer.from('a'.repeat(200) + ' \r\n=x\t', 'latin1'));
  const lines = qp.split('\r\n');
  for (const l of lines) assert.ok(l.length <= 76, l);
  assert.equal(lines.slice(0, -1).join('').replace(/=$/gm, '').length > 0, true);
  assert.equal(qp.replace(/=\r\n/g, ''), 'a'.repeat(200) + '=20\r\n=3Dx=09');
});

// --- through the SMTP client, to a next hop without 8BITMIME ---

let dns: RunningDnsServer;
let sink: RunningSink;

before(async () => {
  dns = await startDnsServer({ records: {} });
  sink = await startSink({ hide: ['8BITMIME', 'SMTPUTF8'] }, 0, '127.0.0.51');
  dns.setRecords({ 'old.test': { MX: [{ exchange: 'mx.old.test', priority: 10 }] }, 'mx.old.test': { A: ['127.0.0.51'] } });
});
after(async () => {
  await sink.stop();
  await dns.stop();
});

function outbound() {
  const config = fromObject({ hostname: 'mx.example.test', data_dir: '/nonexistent', dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: sink.port, tls: 'none', reuse: { max_messages: 1 } } }, null);
  return new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000 } });
}

test('to a next hop without 8BITMIME: sent converted, without BODY=8BITMIME; Python reads the original text', async () => {
  const ob = outbound();
  const r = await ob.deliver('old.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'b@old.test' }], message: MIXED });
  assert.equal(r.get('b@old.test')!.status, 'sent', r.get('b@old.test')!.text);
  const got = sink.messages.at(-1)!;
  assert.equal(got.mailArgs.BODY, undefined);
  assert.equal(is8bit(got.data), false);
  assert.deepEqual(
    (await leaves(got.data)).map((l) => l[2]),
    (await leaves(MIXED)).map((l) => l[2]),
  );

  const before = sink.messages.length;
  const bad = await ob.deliver('old.test', { type: 'mx' }, { mailFrom: 'a@example.test', recipients: [{ address: 'b@old.test' }], message: Buffer.from('Subject: caf\xc3\xa9\r\n\r\nx\xc3\xa9\r\n', 'latin1') });
  assert.deepEqual([bad.get('b@old.test')!.status, bad.get('b@old.test')!.code, bad.get('b@old.test')!.enhanced], ['perm', 554, '5.6.3']);
  assert.equal(sink.messages.length, before, 'nothing sent');
  ob.close();
});

test('is8bit: any octet above 0x7f, wherever it is; every 7-bit octet is not', () => {
  const ascii = Buffer.from(Array.from({ length: 128 }, (_, i) => i));
  assert.equal(is8bit(ascii), false);
  for (const at of [0, 63, 127]) {
    const b = Buffer.from(ascii);
    b[at] = 0x80;
    assert.equal(is8bit(b), true, `0x80 at ${at}`);
  }
  assert.equal(is8bit(Buffer.concat([Buffer.alloc(10_000, 0x41), Buffer.from([0xff])])), true);
  assert.equal(is8bit(Buffer.alloc(0)), false);
});
