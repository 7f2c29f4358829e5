// End to end: `postern start` with real clients (nodemailer, Python smtplib over plain SMTP,
// STARTTLS+AUTH on submission, implicit TLS on smtps, LMTP, and swaks), then the mailboxes read
// back with Python's mailbox module, an independent implementation of Maildir and mbox.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { readMaildir as maildir, waitFor } from '../helpers/wait.js';
import { pythonJson, READ_MBOX } from '../helpers/python.js';


const lf = (s: string) => s.replace(/\r\n/g, '\n');

/** A delivered copy is the trace headers we add, then exactly the bytes that were sent. */
function assertDelivered(stored: string, sent: string, rcpt: string, from: string): void {
  const s = lf(stored);
  const body = lf(sent);
  assert.ok(s.startsWith(`Return-Path: <${from}>\nDelivered-To: ${rcpt}\nReceived: from `), `trace headers first, got:\n${s.slice(0, 300)}`);
  assert.ok(s.endsWith(body), `the message as sent follows the trace headers; got:\n${s.slice(-400)}`);
  const trace = s.slice(0, s.length - body.length);
  // Only Return-Path, Delivered-To and one Received field (possibly folded) were added.
  const added = trace.split('\n').filter((l) => l && !/^\s/.test(l));
  assert.deepEqual(added.map((l) => l.split(':')[0]), ['Return-Path', 'Delivered-To', 'Received']);
}



const SENT = [
  'From: Sender <sender@remote.example>',
  'To: Alice <alice@example.test>',
  'Subject: e2e test',
  'Message-ID: <e2e-1@remote.example>',
  'Date: Fri, 27 Nov 2026 12:00:00 +0000',
  '',
  'Line one.',
  '.leading dot line',
  'From the start of a line',
  '',
].join('\r\n');

describe('maildir delivery with real clients', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({ plugins: ['auth', 'relay-acl'] });
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], 'pw-' + u + '\n');
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('nodemailer on the smtp listener', async () => {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, tls: { rejectUnauthorized: false } });
    const info = await t.sendMail({ envelope: { from: 'sender@remote.example', to: ['alice@example.test'] }, raw: SENT });
    assert.match(info.response, /^250 2\.0\.0 /);
    const got = await waitFor(() => maildir(d, 'alice'), (m) => m.length === 1);
    assert.equal(got.length, 1);
    assertDelivered(got[0]!.bytes, SENT, 'alice@example.test', 'sender@remote.example');
    t.close();
  });

  it('Python smtplib: plain SMTP', async () => {
    const r = await pythonJson<{ refused: object }>(
      `
import smtplib, sys, json
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
refused = s.sendmail('sender@remote.example', ['bob@example.test'], sys.stdin.read().encode())
s.quit()
print(json.dumps({"refused": refused}))`,
      [String(d.ports.smtp)],
      { input: SENT },
    );
    assert.deepEqual(r.refused, {});
    const got = await waitFor(() => maildir(d, 'bob'), (m) => m.length === 1);
    assertDelivered(got[0]!.bytes, SENT, 'bob@example.test', 'sender@remote.example');
  });

  it('Python smtplib: <Postmaster> and postmaster@ a local domain are accepted with no user set up (RFC 5321 §4.5.1) and land in the postmaster mailbox', async () => {
    const r = await pythonJson<{ refused: object; bare: [number, string] }>(
      `
import smtplib, sys, json
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
msg = sys.stdin.read().encode()
refused = s.sendmail('sender@remote.example', ['PostMaster@example.test'], msg)
s.mail('sender@remote.example')
bare = s.rcpt('<Postmaster>')
s.data(msg)
s.quit()
print(json.dumps({"refused": refused, "bare": [bare[0], bare[1].decode()]}))`,
      [String(d.ports.smtp)],
      { input: SENT },
    );
    assert.deepEqual(r.refused, {});
    assert.equal(r.bare[0], 250);
    const got = await waitFor(() => maildir(d, 'postmaster'), (m) => m.length === 2);
    assertDelivered(got[0]!.bytes, SENT, 'postmaster@example.test', 'sender@remote.example');
  });

  it('Python smtplib: submission needs STARTTLS before AUTH, then relays for the user', async () => {
    const r = await pythonJson<{ before: string[]; noauth: number; ok: object }>(
      `
import smtplib, ssl, sys, json
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
before = sorted(s.esmtp_features.keys())
s.starttls(context=ctx)
s.ehlo()
try:
    s.sendmail('carol@example.test', ['dave@example.test'], b'Subject: x\\r\\n\\r\\nx\\r\\n')
    noauth = 0
except smtplib.SMTPSenderRefused as e:
    noauth = e.smtp_code
s.login('carol@example.test', 'pw-carol')
ok = s.sendmail('carol@example.test', ['dave@example.test'], sys.stdin.read().encode())
s.quit()
print(json.dumps({"before": before, "noauth": noauth, "ok": ok}))`,
      [String(d.ports.submission)],
      { input: SENT },
    );
    assert.ok(!r.before.includes('auth'), 'AUTH is not offered before STARTTLS');
    assert.ok(r.before.includes('starttls'));
    assert.equal(r.noauth, 530);
    assert.deepEqual(r.ok, {});
    const got = await waitFor(() => maildir(d, 'dave'), (m) => m.length === 1);
    assertDelivered(got[0]!.bytes, SENT, 'dave@example.test', 'carol@example.test');
    assert.match(lf(got[0]!.bytes), /with ESMTPSA/);
  });

  it('Python smtplib: implicit TLS on smtps (submissions, RFC 8314: AUTH required)', async () => {
    const r = await pythonJson<{ ok: object; cipher: string }>(
      `
import smtplib, ssl, sys, json
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL('127.0.0.1', int(sys.argv[1]), context=ctx)
s.login('carol@example.test', 'pw-carol')
ok = s.sendmail('carol@example.test', ['erin@example.test'], sys.stdin.read().encode())
cipher = s.sock.cipher()[0]
s.quit()
print(json.dumps({"ok": ok, "cipher": cipher}))`,
      [String(d.ports.smtps)],
      { input: SENT },
    );
    assert.deepEqual(r.ok, {});
    assert.ok(r.cipher.length > 0);
    const got = await waitFor(() => maildir(d, 'erin'), (m) => m.length === 1);
    assertDelivered(got[0]!.bytes, SENT, 'erin@example.test', 'carol@example.test');
    assert.match(lf(got[0]!.bytes), /with ESMTPSA/);
  });

  it('Python smtplib.LMTP: unknown recipient refused at RCPT, known one delivered', async () => {
    const r = await pythonJson<{ refused: Record<string, [number, string]> }>(
      `
import smtplib, sys, json
s = smtplib.LMTP('127.0.0.1', int(sys.argv[1]))
refused = s.sendmail('sender@remote.example', ['alice@example.test', 'nobody@example.test'], sys.stdin.read().encode())
s.quit()
print(json.dumps({"refused": {k: [v[0], v[1].decode()] for k, v in refused.items()}}))`,
      [String(d.ports.lmtp)],
      { input: SENT.replace('e2e-1', 'e2e-lmtp') },
    );
    assert.deepEqual(Object.keys(r.refused), ['nobody@example.test']);
    assert.equal(r.refused['nobody@example.test']![0], 550);
    assert.match(r.refused['nobody@example.test']![1], /^5\.1\.1 /);
    const got = await waitFor(() => maildir(d, 'alice'), (m) => m.length === 2);
    assert.equal(got.length, 2);
    assert.ok(got.some((m) => m.bytes.includes('e2e-lmtp') && /with LMTP/.test(m.bytes)));
  });

  it('swaks: STARTTLS + AUTH PLAIN and AUTH LOGIN on submission', { timeout: 30_000 }, async () => {
    const swaks = spawnSync('swaks', ['--version'], { encoding: 'utf8' });
    assert.equal(swaks.error, undefined, 'swaks is required (apt-get install -y swaks); .ci/run installs it');
    for (const method of ['PLAIN', 'LOGIN']) {
      const r = spawnSync(
        'swaks',
        ['--server', '127.0.0.1', '--port', String(d.ports.submission), '--tls', '--auth', method, '--auth-user', 'carol@example.test', '--auth-password', 'pw-carol',
          '--from', 'carol@example.test', '--to', 'alice@example.test', '--header', `Subject: swaks ${method}`, '--body', 'hello from swaks'],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /<~ {2}250 2\.0\.0 /);
    }
    const got = await waitFor(() => maildir(d, 'alice'), (m) => m.length === 4);
    assert.equal(got.filter((m) => /Subject: swaks (PLAIN|LOGIN)/.test(m.bytes)).length, 2);
  });
});

describe('mbox delivery', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({ mailbox: { format: 'mbox', path: '{data_dir}/mbox/{domain}/{local}' } });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('two messages read back with Python mailbox.mbox, From_ lines and mboxrd quoting intact', async () => {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true });
    const second = SENT.replace('e2e-1', 'e2e-2').replace('Line one.', '>From already quoted');
    await t.sendMail({ envelope: { from: 'sender@remote.example', to: ['alice@example.test'] }, raw: SENT });
    await t.sendMail({ envelope: { from: '', to: ['alice@example.test'] }, raw: second });
    t.close();
    const path = join(d.dataDir, 'mbox', 'example.test', 'alice');
    const got = await waitFor(
      () => pythonJson<{ from_: string; bytes: string }[]>(READ_MBOX, [path]).catch(() => []),
      (m) => m.length === 2,
    );
    assert.equal(got.length, 2);
    assert.match(got[0]!.from_, /^sender@remote\.example /);
    assert.match(got[1]!.from_, /^MAILER-DAEMON /);
    // Python's reader returns the stored bytes as they are, so the body shows mboxrd quoting:
    // each line matching /^>*From / carries one more '>'.
    const mboxrd = (s: string) => lf(s).replace(/^(>*From )/gm, '>$1');
    assertDelivered(got[0]!.bytes, mboxrd(SENT), 'alice@example.test', 'sender@remote.example');
    assertDelivered(got[1]!.bytes, mboxrd(second), 'alice@example.test', '');
  });

  it('Python smtplib.LMTP: an alias and its target in one transaction get one entry, both answered 250', async () => {
    const a = await d.cli(['user', 'alias', 'al@example.test', 'alice@example.test']);
    assert.equal(a.code, 0, a.stderr);
    const path = join(d.dataDir, 'mbox', 'example.test', 'alice');
    // The mbox exists only if an earlier test of this file delivered into it.
    const before = existsSync(path) ? (await pythonJson<unknown[]>(READ_MBOX, [path])).length : 0;
    // One reply per recipient after DATA (RFC 2033 §4.2): smtplib.LMTP.data reads the first,
    // getreply the second.
    const r = await pythonJson<[number, string][]>(
      `
import smtplib, sys, json
s = smtplib.LMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
s.mail('sender@remote.example')
replies = [s.rcpt('al@example.test'), s.rcpt('alice@example.test'), s.data(sys.stdin.read().encode()), s.getreply()]
s.quit()
print(json.dumps([[c, m.decode()] for c, m in replies]))`,
      [String(d.ports.lmtp)],
      { input: SENT.replace('e2e-1', 'e2e-lmtp-alias') },
    );
    assert.deepEqual(r.map(([c]) => c), [250, 250, 250, 250]);
    assert.match(r[3]![1], /^2\.0\.0 Delivered as /);
    const got = await pythonJson<{ bytes: string }[]>(READ_MBOX, [path]);
    assert.equal(got.length, before + 1);
    assert.equal(got.filter((m) => m.bytes.includes('e2e-lmtp-alias')).length, 1);
  });
});
