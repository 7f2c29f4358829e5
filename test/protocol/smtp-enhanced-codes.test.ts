// ENHANCEDSTATUSCODES honestly (RFC 2034 §3): over raw sockets, every 2yz/4yz/5yz reply except the
// greeting and the HELO/EHLO/LHLO replies carries exactly one enhanced code of the reply's class.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness } from '../helpers/fakes.js';
import { accept, reject } from '../../src/pipeline/verdict.js';

const ONE_CODE = /^(\d)\d\d[ -]([245])\.\d{1,3}\.\d{1,3} (?![245]\.\d{1,3}\.\d{1,3}(?: |$))/;

/** Sends each line, records [command, reply]. */
async function script(s: SmtpTranscript, lines: (string | Buffer)[], log: [string, string][]): Promise<void> {
  for (const l of lines) {
    s.send(l);
    const r = await s.reply();
    if (r === null) break;
    log.push([typeof l === 'string' ? l : '<data>', r]);
  }
}

function check(log: [string, string][]): void {
  assert.ok(log.length > 10);
  for (const [cmd, reply] of log) {
    const code = Number(reply.slice(0, 3));
    const exempt = cmd === '<greeting>' || /^(HELO|EHLO|LHLO) \S+$/i.test(cmd);
    if ((code >= 300 && code < 400) || (exempt && code < 300)) {
      assert.doesNotMatch(reply, /^\d{3}[ -][245]\.\d+\.\d+ /, `${cmd} → ${reply}: no code expected`);
      continue;
    }
    for (const line of reply.split('\n')) {
      const m = ONE_CODE.exec(line);
      assert.ok(m, `${cmd} → "${line}": exactly one enhanced code expected`);
      assert.equal(m[1], m[2], `${cmd} → "${line}": class mismatch`);
    }
  }
}

test('every reply on the smtp listener carries exactly one correct enhanced code', async () => {
  const h = await startHarness({ config: { smtp: { max_recipients: 2, max_message_size: 5000 } } });
  h.pipeline.hooks.rcpt = (i) => (i.rcpt!.address.startsWith('deny') ? reject(550, '5.7.1', 'Denied by rule') : i.rcpt!.address.startsWith('ok') ? accept() : { kind: 'next' });
  const log: [string, string][] = [];
  try {
    const s = await openSmtp(h.ports.smtp!);
    log.push(['<greeting>', (await s.reply())!]);
    await script(
      s,
      [
        'MAIL FROM:<a@b.example>', // 503 before EHLO
        'HELO', // 501 syntax
        'EHLO c.example',
        'HELP',
        'NOOP',
        'VRFY alice',
        'VRFY',
        'AUTH PLAIN AGEAYg==', // not offered before TLS
        'RCPT TO:<alice@example.test>', // 503 need MAIL
        'DATA', // 503 need RCPT
        'MAIL FROM:<bad', // 501 5.1.7
        'MAIL FROM:<a@b.example> SIZE=999999', // 552
        'MAIL FROM:<a@b.example> XYZ=1', // 555
        'MAIL FROM:<a@b.example>',
        'MAIL FROM:<a@b.example>', // nested
        'RCPT TO:<nobody@example.test>',
        'RCPT TO:<x@foreign.example>',
        'RCPT TO:<deny@foreign.example>',
        'RCPT TO:<ok@foreign.example>',
        'RCPT TO:<alice@example.test>',
        'RCPT TO:<Postmaster>', // 452 too many
        'RCPT TO:<<>', // 501
        'DATA',
        Buffer.from('Subject: x\r\n\r\nbare\nlf\r\n.\r\n'),
        'MAIL FROM:<a@b.example>',
        'RCPT TO:<alice@example.test>',
        'DATA',
        Buffer.from('Subject: x\r\n\r\nok\r\n.\r\n'),
        'RSET',
        'STARTTLS extra',
        'FOO',
        'HELO c.example',
        'QUIT',
      ],
      log,
    );
    s.close();
    // STARTTLS and AUTH after TLS, HTTP and line-too-long closings, LMTP, on other sessions.
    const t0 = await openSmtp(h.ports.smtp!);
    await t0.expect('220 ');
    await t0.cmd('EHLO c.example', '250');
    t0.send('STARTTLS');
    log.push(['STARTTLS', (await t0.reply())!]);
    const sock = tlsConnect({ socket: t0.sock, rejectUnauthorized: false });
    await new Promise((r) => sock.once('secureConnect', r));
    const t = new SmtpTranscript(sock);
    await script(t, ['EHLO c.example', 'STARTTLS', 'AUTH PLAIN AGFAYgB4', 'AUTH CRAM-MD5', 'AUTH LOGIN', '*', 'AUTH LOGIN', 'YQ==', 'eA==', 'AUTH PLAIN ***'], log);
    t.close();
    const u = await openSmtp(h.ports.smtp!);
    await u.expect('220 ');
    await script(u, ['GET / HTTP/1.1'], log);
    u.close();
    const v = await openSmtp(h.ports.smtp!);
    await v.expect('220 ');
    await script(v, ['X'.repeat(100_000)], log);
    v.close();
  } finally {
    await h.close();
  }
  check(log);
  // Spot checks of the library's own replies, rewritten by the adapter.
  const find = (cmd: string) => log.find(([c]) => c === cmd)?.[1];
  assert.match(find('MAIL FROM:<bad')!, /^501 5\.1\.7 /);
  assert.match(find('RCPT TO:<Postmaster>')!, /^452 4\.5\.3 /);
  assert.match(find('AUTH PLAIN AGEAYg==')!, /^538 5\.7\.11 /);
  assert.match(find('AUTH PLAIN AGFAYgB4')!, /^535 5\.7\.8 /);
  assert.match(find('QUIT')!, /^221 2\.0\.0 /);
  assert.match(find('STARTTLS')!, /^220 2\.0\.0 /);
  assert.match(find('X'.repeat(100_000))!, /^421 4\.5\.2 /);
});

test('every reply on the lmtp and submission listeners carries exactly one correct enhanced code', async () => {
  const h = await startHarness({ listeners: ['lmtp', 'submission'] });
  h.directory.users.set('bob@example.test', 'x');
  h.queue.lmtpOutcome = (a) => (a.startsWith('bob') ? { status: 'deferred', code: 452, enhanced: '5.2.2', text: 'wrong class from the queue' } : { status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Delivered' });
  const log: [string, string][] = [];
  try {
    const s = await openSmtp(h.ports.lmtp!);
    log.push(['<greeting>', (await s.reply())!]);
    await script(s, ['HELO x', 'EHLO x', 'LHLO x.example', 'AUTH PLAIN AGFAYgB4', 'STARTTLS', 'MAIL FROM:<a@b.example>', 'RCPT TO:<alice@example.test>', 'RCPT TO:<bob@example.test>', 'DATA'], log);
    s.send('Subject: x\r\n\r\nok\r\n.');
    log.push(['<data>', (await s.reply())!], ['<data>', (await s.reply())!]);
    assert.match(log.at(-1)![1], /^452 4\.0\.0 /);
    s.close();
    const t = await openSmtp(h.ports.submission!);
    log.push(['<greeting>', (await t.reply())!]);
    await script(t, ['EHLO x.example', 'MAIL FROM:<a@b.example>', 'RCPT TO:<a@b.example>', 'DATA', 'AUTH PLAIN AGFAYgB4'], log);
    t.close();
  } finally {
    await h.close();
  }
  check(log);
});
