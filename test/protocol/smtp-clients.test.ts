// Real clients: Python smtplib (plain smtp, STARTTLS+AUTH on submission, implicit TLS on smtps,
// LMTP per-recipient replies) and nodemailer; raw sockets for the AUTH/TLS rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { createTransport, type SendMailOptions } from 'nodemailer';
import { pythonJson } from '../helpers/python.js';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';
import { accept, tempfail } from '../../src/pipeline/verdict.js';

function withAuth(h: Harness): void {
  h.pipeline.hooks.auth = async (i) => {
    if (i.auth!.password === 'down') return tempfail('4.3.0', 'backend down');
    return (await h.directory.authenticate(i.auth!.username, i.auth!.password)) ? accept() : { kind: 'next' };
  };
}

const PY_SEND = `
import smtplib, ssl, sys, json
mode, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = "Subject: py\\r\\nFrom: alice@example.test\\r\\n\\r\\nfrom python\\r\\n"
out = {}
if mode == "smtps":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx)
else:
    s = smtplib.SMTP("127.0.0.1", port)
code, ehlo = s.ehlo("py.example")
out["ehlo"] = ehlo.decode()
if mode == "submission":
    try:
        s.login("alice@example.test", "secret")
    except smtplib.SMTPException as e:
        out["preTlsLogin"] = str(e)
    s.starttls(context=ctx)
    code, ehlo = s.ehlo("py.example")
    out["ehloTls"] = ehlo.decode()
if mode in ("submission", "smtps"):
    try:
        s.login("alice@example.test", "wrong")
    except smtplib.SMTPAuthenticationError as e:
        out["badLogin"] = [e.smtp_code, e.smtp_error.decode()]
    out["login"] = list(s.login("alice@example.test", "secret"))
    out["login"][1] = out["login"][1].decode()
    out["relay"] = s.sendmail("alice@example.test", ["someone@foreign.example"], msg)
else:
    out["relay"] = s.sendmail("a@sender.example", ["alice@example.test"], msg)
s.quit()
print(json.dumps(out))
`;

test('python smtplib: plain smtp on the MX listener', async () => {
  const h = await startHarness();
  try {
    const out = await pythonJson<{ ehlo: string; relay: object }>(PY_SEND, ['smtp', String(h.ports.smtp)]);
    for (const ext of ['PIPELINING', 'SIZE', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'STARTTLS', 'DSN']) assert.match(out.ehlo, new RegExp(ext));
    assert.doesNotMatch(out.ehlo, /AUTH/, 'no AUTH before TLS');
    assert.deepEqual(out.relay, {});
    assert.equal(h.queue.accepted.length, 1);
  } finally {
    await h.close();
  }
});

test('python smtplib: submission needs STARTTLS before AUTH, then AUTH lets the user relay', async () => {
  const h = await startHarness({ listeners: ['submission'] });
  withAuth(h);
  try {
    const out = await pythonJson<{ ehlo: string; ehloTls: string; preTlsLogin: string; badLogin: [number, string]; login: [number, string]; relay: object }>(PY_SEND, ['submission', String(h.ports.submission)]);
    assert.doesNotMatch(out.ehlo, /AUTH/);
    assert.match(out.preTlsLogin, /not supported|AUTH/i);
    assert.match(out.ehloTls, /AUTH PLAIN LOGIN/);
    assert.deepEqual(out.badLogin, [535, '5.7.8 Authentication credentials invalid']);
    assert.equal(out.login[0], 235);
    assert.match(out.login[1], /^2\.7\.0 /);
    assert.equal(h.queue.accepted.length, 1);
    const env = h.queue.accepted[0]!.envelope;
    assert.equal(env.source.authUser, 'alice@example.test');
    assert.equal(env.source.protocol, 'ESMTPSA');
    assert.deepEqual(env.recipients.map((r) => r.address), ['someone@foreign.example']);
    assert.match(h.queue.accepted[0]!.message.toString(), /with ESMTPSA id .*\r\n\t\(using TLSv1\.[23] with cipher /s);
  } finally {
    await h.close();
  }
});

test('python smtplib: implicit TLS on smtps', async () => {
  const h = await startHarness({ listeners: ['smtps'] });
  withAuth(h);
  try {
    const out = await pythonJson<{ ehlo: string; login: [number, string] }>(PY_SEND, ['smtps', String(h.ports.smtps)]);
    assert.match(out.ehlo, /AUTH PLAIN LOGIN/);
    assert.doesNotMatch(out.ehlo, /STARTTLS/);
    assert.equal(out.login[0], 235);
    assert.equal(h.queue.accepted[0]!.envelope.source.protocol, 'ESMTPSA');
  } finally {
    await h.close();
  }
});

test('python smtplib.LMTP: per-recipient replies', async () => {
  const h = await startHarness({ listeners: ['lmtp'] });
  h.directory.users.set('bob@example.test', 'x');
  h.queue.lmtpOutcome = (a) => (a.startsWith('bob') ? { status: 'failed', code: 550, enhanced: '5.2.1', text: 'Mailbox disabled' } : { status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Delivered' });
  try {
    const out = await pythonJson<Record<string, [number, string]>>(
      `
import smtplib, sys, json
s = smtplib.LMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo("py.example")  # LMTP sends LHLO
s.mail("a@sender.example")
rcpts = ["alice@example.test", "bob@example.test"]
for r in rcpts:
    s.rcpt(r)
# smtplib reads only the first reply after DATA; RFC 2033 sends one per recipient.
first = s.data("Subject: l\\r\\n\\r\\nx\\r\\n")
refused = {rcpts[0]: first}
refused[rcpts[1]] = s.getreply()
s.quit()
print(json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
`,
      [String(h.ports.lmtp)],
    );
    assert.equal(out['alice@example.test']![0], 250);
    assert.match(out['alice@example.test']![1], /^2\.0\.0 /);
    assert.deepEqual(out['bob@example.test'], [550, '5.2.1 Mailbox disabled']);
    assert.equal(h.queue.delivered.length, 1);
  } finally {
    await h.close();
  }
});

test('nodemailer: STARTTLS + AUTH PLAIN on submission', async () => {
  const h = await startHarness({ listeners: ['submission'] });
  withAuth(h);
  try {
    const t = createTransport({ host: '127.0.0.1', port: h.ports.submission!, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.test', pass: 'secret' }, authMethod: 'PLAIN' });
    // nodemailer's message-level `dsn` option is missing from its type definitions.
    const mail = { from: 'alice@example.test', to: 'x@foreign.example', subject: 'nm', text: 'hello', dsn: { id: 'env-1', return: 'headers', notify: ['failure', 'delay'], recipient: 'alice@example.test' } };
    const info = await t.sendMail(mail as SendMailOptions);
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as Q/);
    t.close();
    const env = h.queue.accepted[0]!.envelope;
    assert.equal(env.envid, 'env-1');
    assert.equal(env.ret, 'HDRS');
    assert.deepEqual(env.recipients[0]!.notify, ['FAILURE', 'DELAY']);
    assert.equal(env.recipients[0]!.orcpt, 'rfc822;alice@example.test');
  } finally {
    await h.close();
  }
});

test('submission: MAIL before AUTH → 530 5.7.0, AUTH before STARTTLS → 538 5.7.11, bad base64 → 501 5.5.2, backend down → 454 4.7.0', async () => {
  const h = await startHarness({ listeners: ['submission'] });
  withAuth(h);
  try {
    const s = await openSmtp(h.ports.submission!);
    await s.expect('220 ');
    await s.cmd('EHLO c.example', '250');
    await s.cmd('MAIL FROM:<alice@example.test>', '530 5.7.0');
    await s.cmd('AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=', '538 5.7.11');
    await s.cmd('STARTTLS', '220 2.0.0');
    const sock = tlsConnect({ socket: s.sock, rejectUnauthorized: false });
    await new Promise((r) => sock.once('secureConnect', r));
    const t = new SmtpTranscript(sock);
    await t.cmd('EHLO c.example', '250');
    await t.cmd('MAIL FROM:<alice@example.test>', '530 5.7.0');
    await t.cmd('AUTH PLAIN !!notbase64!!', '501 5.5.2');
    await t.cmd('AUTH LOGIN', '334 ');
    await t.cmd('%%%', '501 5.5.2');
    await t.cmd('AUTH LOGIN', '334 ');
    await t.cmd('*', '501 5.7.0');
    await t.cmd('AUTH XOAUTH2 abc', '504 5.5.4');
    const down = Buffer.from('\0alice@example.test\0down').toString('base64');
    await t.cmd(`AUTH PLAIN ${down}`, '454 4.7.0');
    const good = Buffer.from('\0Alice@EXAMPLE.test\0secret').toString('base64');
    await t.cmd(`AUTH PLAIN ${good}`, '235 2.7.0');
    await t.cmd(`AUTH PLAIN ${good}`, '503 5.5.1');
    await t.cmd('MAIL FROM:<alice@example.test>', '250 2.1.0');
    t.close();
  } finally {
    await h.close();
  }
});

test('an implicit-TLS client that closes before the handshake does not crash the process', async () => {
  const h = await startHarness({ listeners: ['smtps'] });
  try {
    const net = await import('node:net');
    for (let i = 0; i < 3; i++) {
      const c = net.connect(h.ports.smtps!, '127.0.0.1');
      await new Promise((r) => c.once('connect', r));
      c.destroy();
    }
    await new Promise((r) => setTimeout(r, 100));
    const s = await openSmtp(h.ports.smtps!, { tls: true });
    await s.expect('220 ');
    s.close();
  } finally {
    await h.close();
  }
});
