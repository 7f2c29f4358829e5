// Never an open relay: every address trick is refused from an untrusted, unauthenticated client
// with 554 5.7.1, while authenticated users and trusted networks may relay (the message is held
// in the queue until outbound delivery exists).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { pythonJson } from '../helpers/python.js';

const TRICKS = [
  'victim@evil.example',
  'VICTIM@EVIL.EXAMPLE',
  'victim%evil.example@example.test',
  'victim%evil.example@mx.example.test',
  '"victim@evil.example"@example.test',
  '@example.test:victim@evil.example',
  '@example.test,@mx.example.test:victim@evil.example',
  'victim@evil.example.',
  'victim@[192.0.2.1]',
  'victim@[IPv6:2001:db8::1]',
  'evil.example!victim@example.test',
  'victim@evil.example@example.test',
  'victim@example.test.evil.example',
];

describe('open relay refusal', () => {
  let d: RunningDaemon;
  before(async () => {
    // No trusted networks: loopback is an ordinary Internet client here.
    d = await startDaemon({ relay: { networks: [] }, plugins: ['auth', 'relay-acl'] });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'alice-pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  for (const rcpt of TRICKS) {
    it(`refuses RCPT TO:<${rcpt}> from an untrusted client`, async () => {
      const s = await openSmtp(d.ports.smtp!);
      await s.expect('220');
      await s.cmd('EHLO client.example', '250');
      await s.cmd('MAIL FROM:<spammer@evil.example>', '250');
      s.send(`RCPT TO:<${rcpt}>`);
      const r = await s.reply();
      // A malformed address may be refused as bad syntax (501 5.1.3); none may be accepted.
      assert.ok(r !== null && /^(554 5\.7\.1|501 5\.1\.3) /.test(r), `got ${r}`);
      s.send('QUIT');
      s.close();
    });
  }

  it('accepts the same foreign recipient from an authenticated user (held in the queue)', async () => {
    const s = await openSmtp(d.ports.smtps!, { tls: true });
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0alice-pw').toString('base64')}`, '235 2.7.0');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<victim@evil.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: relayed\r\n\r\nhello\r\n.', '250 2.0.0');
    s.send('QUIT');
    s.close();
    const spooled = await readdir(join(d.dataDir, 'spool'), { recursive: true });
    assert.ok(spooled.length > 0, 'the relayed message waits in the spool');
  });

  it('Python smtplib: AUTH in the middle of a transaction is refused (503) and opens nothing; AUTH as another user is refused', async () => {
    const r = await pythonJson<Record<string, [number, string]>>(
      `
import smtplib, ssl, sys, json, base64
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
plain = lambda authzid, user, pw: base64.b64encode(f"{authzid}\\0{user}\\0{pw}".encode()).decode()
out = {}
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.starttls(context=ctx)
s.ehlo('client.example')
out['mail'] = s.mail('spammer@evil.example')
out['rcpt'] = s.rcpt('victim@evil.example')
out['auth_in_tx'] = s.docmd('AUTH', 'PLAIN ' + plain('', 'alice@example.test', 'alice-pw'))
out['rcpt_again'] = s.rcpt('victim@evil.example')
out['rset'] = s.docmd('RSET')
out['auth_other'] = s.docmd('AUTH', 'PLAIN ' + plain('bob@example.test', 'alice@example.test', 'alice-pw'))
out['rcpt_after_refused'] = (s.mail('spammer@evil.example'), s.rcpt('victim@evil.example'))[1]
s.rset()
out['auth_self'] = s.docmd('AUTH', 'PLAIN ' + plain('Alice@Example.test', 'alice@example.test', 'alice-pw'))
s.quit()
print(json.dumps({k: [v[0], v[1].decode()] for k, v in out.items()}))`,
      [String(d.ports.smtp)],
    );
    assert.deepEqual(r.rcpt, [554, '5.7.1 Relay access denied']);
    assert.deepEqual(r.auth_in_tx, [503, '5.5.1 MAIL transaction in progress']);
    assert.equal(r.rcpt_again![0], 554, 'the refused AUTH left the client unauthenticated');
    assert.equal(r.rset![0], 250);
    assert.deepEqual(r.auth_other, [535, '5.7.8 Cannot authorize as another user']);
    assert.equal(r.rcpt_after_refused![0], 554);
    assert.equal(r.auth_self![0], 235, 'naming oneself as the authorization identity is fine');
  });

  it('a wrong password does not open the relay', async () => {
    const s = await openSmtp(d.ports.smtps!, { tls: true });
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0wrong').toString('base64')}`, '535 5.7.8');
    // smtps is a submission port (RFC 8314): without AUTH there is no transaction at all.
    await s.cmd('MAIL FROM:<alice@example.test>', '530 5.7.0');
    s.close();
  });
});

describe('the MX listener never relays for an unauthenticated client', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({ relay: { networks: [] }, plugins: [] });
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('refuses a foreign recipient even with an empty plugin chain', async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<spammer@evil.example>', '250');
    await s.cmd('RCPT TO:<victim@evil.example>', '554 5.7.1');
    await s.cmd('RCPT TO:<victim%evil.example@example.test>', '554 5.7.1');
    s.close();
  });
});

describe('trusted networks may relay', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({ relay: { networks: ['127.0.0.0/8'] }, plugins: ['relay-acl'] });
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('accepts a foreign recipient from 127.0.0.1', async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<app@example.test>', '250');
    await s.cmd('RCPT TO:<someone@elsewhere.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: x\r\n\r\nx\r\n.', '250 2.0.0');
    s.close();
  });
});
