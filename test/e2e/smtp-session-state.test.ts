// What the SMTP session remembers across STARTTLS, XCLIENT, RSET and refused greetings, against
// the real daemon (auth, relay-acl, and a path plugin that refuses the HELO name
// "refused.example"), with Python smtplib and raw sockets:
//   - STARTTLS (RFC 3207 §4.2) forgets an XCLIENT LOGIN and HELO: no relaying as that user, no
//     ESMTPSA in Received, no login in the transaction log; the XCLIENT address and name stay;
//   - a failed AUTH after STARTTLS does not bring the forgotten login back;
//   - XCLIENT LOGIN= (empty) logs the user out;
//   - a HELO/EHLO refused by the `helo` stage or by smtp-server changes nothing (RFC 5321
//     §4.1.4): the earlier greeting's name and mode, and an open transaction, stay;
//   - RSET ends the transaction for the log too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { removeDir, REPO, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { pythonJson } from '../helpers/python.js';
import { readMaildir, waitFor } from '../helpers/wait.js';

const REFUSE_HELO_PLUGIN = join(REPO, 'test', 'fixtures', 'plugins', 'sample-plugin.ts');
const PROXY = '127.0.0.2';
const ALICE_PLAIN = Buffer.from('\0alice@example.test\0alice-pw').toString('base64');
const WRONG_PLAIN = Buffer.from('\0alice@example.test\0not-her-password').toString('base64');

/** Upgrades a transcript with STARTTLS and returns the one for the TLS session. */
async function starttls(s: SmtpTranscript): Promise<SmtpTranscript> {
  await s.cmd('STARTTLS', '220');
  const sock = tlsConnect({ socket: s.sock, rejectUnauthorized: false });
  await new Promise((r) => sock.once('secureConnect', r));
  return new SmtpTranscript(sock);
}

async function sendToAlice(s: SmtpTranscript, subject: string): Promise<void> {
  await s.cmd('MAIL FROM:<sender@remote.example>', '250');
  await s.cmd('RCPT TO:<alice@example.test>', '250');
  await s.cmd('DATA', '354');
  await s.cmd(`Subject: ${subject}\r\n\r\nbody\r\n.`, '250 2.0.0');
}

// A trusted proxy passes a login with XCLIENT, then starts TLS.
const PY_XCLIENT_STARTTLS = `
import smtplib, ssl, sys, json
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
out = {}
s = smtplib.SMTP("127.0.0.1", port, source_address=("${PROXY}", 0))
s.ehlo("proxy.example")
out["xclient"] = s.docmd("XCLIENT", "LOGIN=alice@example.test")[0]
s.ehlo("proxy.example")
s.docmd("MAIL", "FROM:<alice@example.test>")
out["relayBeforeTls"] = s.docmd("RCPT", "TO:<friend@foreign.example>")[0]
s.rset()
s.starttls(context=ctx)
s.ehlo("proxy.example")
try:
    s.sendmail("alice@example.test", ["friend@foreign.example"], "Subject: relay\\r\\n\\r\\nx\\r\\n")
    out["relayAfterTls"] = "accepted"
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients["friend@foreign.example"]
    out["relayAfterTls"] = "%d %s" % (code, text.decode())
s.sendmail("alice@example.test", ["alice@example.test"], "Subject: after-starttls\\r\\n\\r\\nx\\r\\n")
s.quit()
print(json.dumps(out))
`;

describe('SMTP session state', () => {
  let d: RunningDaemon;
  const delivered = async (subject: string): Promise<string> => {
    const has = (m: { bytes: string }) => m.bytes.includes(`\nSubject: ${subject}\n`) || m.bytes.includes(`\nSubject: ${subject}\r\n`);
    const got = await waitFor(() => readMaildir(d, 'alice'), (ms) => ms.some(has));
    const m = got.find(has);
    assert.ok(m, `"${subject}" was not delivered`);
    return m.bytes;
  };
  /** Our Received field (local delivery puts Return-Path and Delivered-To above it), unfolded. */
  const received = (bytes: string) => (/(?:^|\n)(Received: [^]*?)\r?\n(?![ \t])/.exec(bytes)?.[1] ?? '').replace(/\r?\n[ \t]+/g, ' ');

  before(async () => {
    d = await startDaemon({
      relay: { networks: [] },
      plugins: ['auth', 'relay-acl', { [REFUSE_HELO_PLUGIN]: { deny: ['refused.example'] } }],
      listen: { smtp: { host: '127.0.0.1', port: 0, xclient: { trusted: [`${PROXY}/32`] } } },
    });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'alice-pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('STARTTLS forgets an XCLIENT LOGIN: no relaying as that user, no ESMTPSA, no login in the log', { timeout: 30_000 }, async () => {
    const out = await pythonJson<{ xclient: number; relayBeforeTls: number; relayAfterTls: string }>(PY_XCLIENT_STARTTLS, [String(d.ports.smtp)]);
    assert.equal(out.xclient, 220);
    const rcv = received(await delivered('after-starttls'));
    assert.match(rcv, / with ESMTPS id /);
    const tx = d.logs.filter((l) => l.evt === 'smtp.transaction' && l.outcome === 'queued').at(-1)!;
    assert.equal(tx.authUser, undefined);
    assert.ok(d.logs.some((l) => l.evt === 'smtp.starttls' && l.droppedLogin === 'alice@example.test'));
    assert.equal(out.relayBeforeTls, 250, 'the XCLIENT login relays before TLS');
    assert.match(out.relayAfterTls, /^554 5\.7\.1 /);
  });

  it('a failed AUTH after STARTTLS does not bring the XCLIENT login back; a good one authenticates', { timeout: 30_000 }, async () => {
    const plain = await openSmtp(d.ports.smtp!, { localAddress: PROXY });
    await plain.expect('220');
    await plain.cmd('EHLO proxy.example', '250');
    await plain.cmd('XCLIENT LOGIN=alice@example.test', '220');
    await plain.cmd('EHLO proxy.example', '250');
    const s = await starttls(plain);
    const ehlo = await s.cmd('EHLO proxy.example', '250');
    assert.match(ehlo, /AUTH PLAIN/, 'AUTH is offered again: nobody is logged in');
    await s.cmd(`AUTH PLAIN ${WRONG_PLAIN}`, '535 5.7.8');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<friend@foreign.example>', '554 5.7.1');
    await s.cmd('RSET', '250');
    await s.cmd(`AUTH PLAIN ${ALICE_PLAIN}`, '235 2.7.0');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<friend@foreign.example>', '250');
    s.close();
  });

  it('XCLIENT LOGIN= logs the user out', { timeout: 30_000 }, async () => {
    const s = await openSmtp(d.ports.smtp!, { localAddress: PROXY });
    await s.expect('220');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XCLIENT LOGIN=alice@example.test', '220');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<friend@foreign.example>', '250');
    await s.cmd('RSET', '250');
    await s.cmd('XCLIENT LOGIN=', '220');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<friend@foreign.example>', '554 5.7.1');
    s.close();
  });

  it('STARTTLS keeps the XCLIENT address and name and forgets its HELO', { timeout: 30_000 }, async () => {
    const plain = await openSmtp(d.ports.smtp!, { localAddress: PROXY });
    await plain.expect('220');
    await plain.cmd('EHLO proxy.example', '250');
    await plain.cmd('XCLIENT ADDR=192.0.2.7 NAME=client.example HELO=before-tls.example', '220');
    await plain.cmd('EHLO proxy.example', '250');
    const s = await starttls(plain);
    await s.cmd('EHLO after-tls.example', '250');
    await sendToAlice(s, 'xclient-address-kept');
    s.close();
    const rcv = received(await delivered('xclient-address-kept'));
    assert.match(rcv, /^Received: from after-tls\.example \(client\.example \[192\.0\.2\.7\]\)/);
    assert.match(rcv, / with ESMTPS id /);
  });

  it('a refused EHLO changes nothing: no greeting yet stays none; the earlier HELO keeps its name and mode', { timeout: 30_000 }, async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO refused.example', '550 5.7.1');
    await s.cmd('MAIL FROM:<sender@remote.example>', '503 5.5.1');
    await s.cmd('HELO good.example', '250');
    await s.cmd('EHLO refused.example', '550 5.7.1');
    await sendToAlice(s, 'helo-kept');
    // The same after STARTTLS, where the greeting before TLS is gone.
    await s.cmd('EHLO good.example', '250');
    const t = await starttls(s);
    await t.cmd('EHLO refused.example', '550 5.7.1');
    await t.cmd('MAIL FROM:<sender@remote.example>', '503 5.5.1');
    t.close();
    const rcv = received(await delivered('helo-kept'));
    assert.match(rcv, /^Received: from good\.example \(/);
    assert.match(rcv, / with SMTP id /);
  });

  it('an EHLO the helo stage refuses in the middle of a transaction leaves the transaction open', { timeout: 30_000 }, async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO good.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('EHLO refused.example', '550 5.7.1');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: mid-transaction-stage\r\n\r\nbody\r\n.', '250 2.0.0');
    s.close();
    assert.match(received(await delivered('mid-transaction-stage')), /^Received: from good\.example \(.* with ESMTP id /);
  });

  it('an EHLO smtp-server refuses after the helo stage let it through leaves the transaction open', { timeout: 30_000 }, async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO good.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    // smtp-server takes names of up to 300 characters.
    await s.cmd(`EHLO ${'a'.repeat(301)}.example`, '501');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: mid-transaction-library\r\n\r\nbody\r\n.', '250 2.0.0');
    s.close();
    assert.match(received(await delivered('mid-transaction-library')), /^Received: from good\.example \(.* with ESMTP id /);
  });

  it('RSET ends the transaction: later log lines carry no queue id', { timeout: 30_000 }, async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO good.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<nobody@example.test>', '550 5.1.1');
    await s.cmd('RSET', '250');
    await s.cmd('NOSUCHCMD', '500 5.5.2');
    await s.cmd('QUIT', '221');
    s.close();
    const inTx = await waitFor(() => d.logs.find((l) => l.evt === 'smtp.rcpt.rejected' && l.rcpt === 'nobody@example.test'), (l) => !!l);
    assert.ok(inTx?.qid, 'a refusal inside the transaction has its queue id');
    const afterRset = await waitFor(() => d.logs.find((l) => l.command === 'NOSUCHCMD'), (l) => !!l);
    assert.ok(afterRset, 'the unknown command is logged');
    assert.equal(afterRset.cid, inTx.cid);
    assert.equal(afterRset.qid, undefined);
  });
});
