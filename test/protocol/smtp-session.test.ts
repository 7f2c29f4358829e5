// The SMTP session over raw sockets: stages, core relay policy, DSN parameters, Received header,
// verdicts at DATA, LMTP per-recipient replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';
import { reject, tempfail, accept, discard, quarantine } from '../../src/pipeline/verdict.js';

const MSG = 'Subject: hi\r\nFrom: a@sender.example\r\n\r\nhello\r\n.';

async function ehlo(h: Harness, listener: 'smtp' | 'lmtp' = 'smtp'): Promise<SmtpTranscript> {
  const s = await openSmtp(h.ports[listener]!);
  await s.expect('220 ');
  await s.cmd(listener === 'lmtp' ? 'LHLO client.example' : 'EHLO client.example', '250');
  return s;
}

test('a local delivery runs every stage and is queued with our Received header', async () => {
  const h = await startHarness();
  try {
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<a@sender.example> RET=HDRS ENVID=abc+2Bdef', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40example.test', '250 2.1.5');
    await s.cmd('DATA', '354');
    const r = await s.cmd(MSG, '250 2.0.0 Ok: queued as Q');
    await s.cmd('QUIT', '221 2.0.0');
    s.close();
    assert.equal(h.queue.accepted.length, 1);
    const m = h.queue.accepted[0]!;
    assert.ok(r.endsWith(m.id));
    assert.equal(m.envelope.mailFrom, 'a@sender.example');
    assert.equal(m.envelope.ret, 'HDRS');
    assert.equal(m.envelope.envid, 'abc+def');
    assert.deepEqual(m.envelope.recipients, [{ address: 'alice@example.test', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;alice+40example.test' }]);
    assert.equal(m.envelope.source.protocol, 'ESMTP');
    const text = m.message.toString('latin1');
    assert.match(text, /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.example\.test \(Postern\) with ESMTP id Q\d+\r\n\tfor <alice@example\.test>;\r\n\t\w{3}, \d+ \w{3} \d{4} [\d:]{8} \+0000\r\n/);
    assert.ok(text.endsWith('Subject: hi\r\nFrom: a@sender.example\r\n\r\nhello\r\n'));
    assert.deepEqual(
      h.pipeline.calls.map((c) => c.stage),
      ['connect', 'helo', 'mail', 'rcpt', 'data', 'queue'],
    );
  } finally {
    await h.close();
  }
});

test('core policy: unknown local user 550 5.1.1, foreign domain 554 5.7.1, tricks denied, routes allowed', async () => {
  const h = await startHarness({ config: { routes: { 'corp.example': 'smtp://10.0.0.5:25', '.sub.example': 'smtp://10.0.0.6:25' } } });
  try {
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<>', '250 2.1.0');
    await s.cmd('RCPT TO:<nobody@example.test>', '550 5.1.1');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1 Relay access denied');
    await s.cmd('RCPT TO:<x%foreign.example@example.test>', '554 5.7.1');
    // smtp-server itself refuses an @ in a quoted local part; either way it is not relayed.
    await s.cmd('RCPT TO:<"x@foreign.example"@example.test>', '501 5.1.3');
    await s.cmd('RCPT TO:<x@[192.0.2.1]>', '554 5.7.1');
    await s.cmd('RCPT TO:<x@corp.example>', '250 2.1.5');
    await s.cmd('RCPT TO:<x@a.sub.example>', '250 2.1.5');
    await s.cmd('RCPT TO:<x@sub.example>', '554 5.7.1');
    await s.cmd('RCPT TO:<bad address@@>', '501 5.1.3');
    await s.cmd('RCPT TO:<Postmaster>', '250 2.1.5');
    s.close();
  } finally {
    await h.close();
  }
});

test('relay: trusted network may relay, a plugin accept permits, plugin reject/tempfail are replied', async () => {
  const h = await startHarness({ config: { relay: { networks: ['127.0.0.0/8'] } } });
  try {
    h.pipeline.hooks.rcpt = (i) => {
      if (i.rcpt!.address.startsWith('rej')) return reject(550, '5.7.1', 'No thanks');
      if (i.rcpt!.address.startsWith('tmp')) return tempfail('4.7.1', 'Greylisted');
      if (i.rcpt!.address.startsWith('odd')) return reject(250, '2.0.0', 'broken plugin');
      return { kind: 'next' };
    };
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<a@b.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    await s.cmd('RCPT TO:<rej@foreign.example>', '550 5.7.1 No thanks');
    await s.cmd('RCPT TO:<tmp@foreign.example>', '451 4.7.1 Greylisted');
    await s.cmd('RCPT TO:<odd@foreign.example>', '550 5.7.1 broken plugin');
    s.close();
  } finally {
    await h.close();
  }
  const h2 = await startHarness();
  try {
    h2.pipeline.hooks.rcpt = (i) => (i.rcpt!.address === 'ok@foreign.example' ? accept() : { kind: 'next' });
    const s = await ehlo(h2);
    await s.cmd('MAIL FROM:<a@b.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<ok@foreign.example>', '250 2.1.5');
    await s.cmd('RCPT TO:<no@foreign.example>', '554 5.7.1');
    s.close();
  } finally {
    await h2.close();
  }
});

test('DSN and MAIL/RCPT parameter syntax: 501 5.5.4 for bad values, 555 5.5.4 for unknown ones', async () => {
  const h = await startHarness();
  try {
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<a@b.example> RET=SOME', '501 5.5.4');
    await s.cmd('MAIL FROM:<a@b.example> ENVID=a+zz', '501 5.5.4');
    await s.cmd('MAIL FROM:<a@b.example> ENVID=a=b', '501 5.5.4');
    await s.cmd(`MAIL FROM:<a@b.example> ENVID=${'x'.repeat(101)}`, '501 5.5.4');
    await s.cmd('MAIL FROM:<a@b.example> FOO=bar', '555 5.5.4');
    await s.cmd('MAIL FROM:<a@b.example> SIZE=abc', '501 5.5.4');
    await s.cmd('MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS', '501 5.5.4');
    await s.cmd('RCPT TO:<alice@example.test> NOTIFY=SOMETIMES', '501 5.5.4');
    await s.cmd('RCPT TO:<alice@example.test> NOTIFY=DELAY,DELAY', '501 5.5.4');
    await s.cmd('RCPT TO:<alice@example.test> ORCPT=nosemicolon', '501 5.5.4');
    await s.cmd('RCPT TO:<alice@example.test> ORCPT=rfc822;a+zzb', '501 5.5.4');
    await s.cmd('RCPT TO:<alice@example.test> NOTIFY=NEVER ORCPT=rfc822;alice@example.test', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    const env = h.queue.accepted[0]!.envelope;
    assert.equal(env.body, '8BITMIME');
    assert.equal(env.smtputf8, true);
    assert.deepEqual(env.recipients[0]!.notify, ['NEVER']);
    assert.equal(env.source.protocol, 'UTF8SMTP');
  } finally {
    await h.close();
  }
});

test('DATA verdicts: reject, tempfail, discard (250, nothing queued), quarantine (folder set)', async () => {
  const h = await startHarness();
  try {
    let verdict = reject(550, '5.7.1', 'Spam');
    h.pipeline.hooks.data = () => verdict;
    const run = async (expect: string) => {
      const s = await ehlo(h);
      await s.cmd('MAIL FROM:<a@b.example>', '250');
      await s.cmd('RCPT TO:<alice@example.test>', '250');
      await s.cmd('DATA', '354');
      await s.cmd(MSG, expect);
      s.close();
    };
    await run('550 5.7.1 Spam');
    verdict = tempfail('4.3.0', 'Scanner down');
    await run('451 4.3.0 Scanner down');
    verdict = discard('bye');
    await run('250 2.0.0 Ok: queued as');
    assert.equal(h.queue.accepted.length, 0);
    verdict = quarantine('Junk');
    await run('250 2.0.0 Ok: queued as');
    assert.equal(h.queue.accepted.length, 1);
    assert.equal(h.queue.accepted[0]!.envelope.recipients[0]!.folder, 'Junk');
    h.queue.failAccept = true;
    verdict = { kind: 'next' };
    await run('451 4.3.0');
  } finally {
    await h.close();
  }
});

test('connect and helo stage refusals', async () => {
  const h = await startHarness();
  try {
    h.pipeline.hooks.connect = () => reject(550, '5.7.1', 'Listed');
    const s = await openSmtp(h.ports.smtp!);
    await s.expect('554 5.7.1 Listed');
    assert.equal(await s.reply(), null);
    h.pipeline.hooks.connect = () => tempfail('4.7.0', 'Busy');
    const s2 = await openSmtp(h.ports.smtp!);
    await s2.expect('421 4.7.0 Busy');
    delete h.pipeline.hooks.connect;
    h.pipeline.hooks.helo = (i) => (i.session.helo === 'bad.example' ? reject(550, '5.7.1', 'Go away') : { kind: 'next' });
    const s3 = await openSmtp(h.ports.smtp!);
    await s3.expect('220 ');
    await s3.cmd('EHLO bad.example', '550 5.7.1 Go away');
    await s3.cmd('MAIL FROM:<a@b.example>', '503 5.5.1');
    await s3.cmd('EHLO good.example', '250');
    s3.close();
  } finally {
    await h.close();
  }
});

test('LMTP: LHLO, one reply per recipient from the queue outcomes', async () => {
  const h = await startHarness({ listeners: ['lmtp'] });
  try {
    h.directory.users.set('bob@example.test', 'x');
    h.directory.users.set('carol@example.test', 'x');
    h.queue.lmtpOutcome = (a) =>
      a.startsWith('bob') ? { status: 'failed', code: 552, enhanced: '5.2.2', text: 'Mailbox full' } : a.startsWith('carol') ? { status: 'deferred', code: 451, enhanced: '4.2.0', text: 'Locked' } : { status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Delivered' };
    const s = await openSmtp(h.ports.lmtp!);
    const g = await s.expect('220 ');
    assert.match(g, /LMTP/);
    await s.cmd('EHLO x.example', '500 5.5.1');
    await s.cmd('LHLO x.example', '250');
    await s.cmd('MAIL FROM:<a@b.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await s.cmd('RCPT TO:<bob@example.test>', '250 2.1.5');
    await s.cmd('RCPT TO:<carol@example.test>', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0 Delivered');
    await s.expect('552 5.2.2 Mailbox full');
    await s.expect('451 4.2.0 Locked');
    s.close();
    assert.equal(h.queue.delivered.length, 1);
    assert.equal(h.queue.delivered[0]!.envelope.source.protocol, 'LMTP');
    assert.match(h.queue.delivered[0]!.message.toString(), /with LMTP id/);
  } finally {
    await h.close();
  }
});

test('DATA and RSET with an argument, and AUTH without a mechanism, are syntax errors (501 5.5.4); nothing is opened or reset', async () => {
  const h = await startHarness();
  try {
    const s = await ehlo(h);
    await s.cmd('AUTH', '501 5.5.4 Syntax: AUTH mechanism');
    await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await s.cmd('RSET now', '501 5.5.4 Syntax: RSET');
    // Had "DATA foo" opened the message, these lines would be its content.
    await s.cmd('DATA foo', '501 5.5.4 Syntax: DATA');
    await s.cmd('NOOP', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    await s.cmd('RSET', '250');
    await s.cmd('QUIT', '221');
    s.close();
    assert.equal(h.queue.accepted.length, 1);
    assert.deepEqual(h.queue.accepted[0]!.envelope.recipients.map((r) => r.address), ['alice@example.test'], 'RSET with an argument reset nothing');
  } finally {
    await h.close();
  }
});

test('SMTPUTF8: the Received header names a UTF-8 recipient in UTF-8 (RFC 6532), as the message has it', async () => {
  const h = await startHarness({ config: { routes: { 'corp.example': 'smtp://10.0.0.5:25' } } });
  try {
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<jörg@sender.example> SMTPUTF8', '250 2.1.0');
    await s.cmd('RCPT TO:<jöran@corp.example>', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: grüße\r\n\r\nhello\r\n.', '250 2.0.0');
    s.close();
    const m = h.queue.accepted[0]!;
    assert.equal(m.envelope.recipients[0]!.address, 'jöran@corp.example');
    const text = m.message.toString('utf8');
    assert.doesNotMatch(text, /\uFFFD/, 'every byte is valid UTF-8');
    assert.match(text, /^Received: from client\.example [^;]*with UTF8SMTP id Q\d+\r\n\tfor <jöran@corp\.example>;/);
    assert.ok(m.message.includes(Buffer.from('Subject: grüße', 'utf8')));
  } finally {
    await h.close();
  }
});

test('quoted local parts with spaces (RFC 5321 §4.1.2) are addresses, parameters after them still count; "@" inside quotes stays refused', async () => {
  const h = await startHarness({ config: { routes: { 'corp.example': 'smtp://10.0.0.5:25' } } });
  try {
    const s = await ehlo(h);
    await s.cmd('MAIL FROM:<"john smith"@sender.example> SIZE=100 BODY=8BITMIME', '250 2.1.0');
    await s.cmd('RCPT TO:<"a b>c"@corp.example> NOTIFY=NEVER', '250 2.1.5');
    await s.cmd('RCPT TO:<"x@foreign.example"@example.test>', '501 5.1.3');
    await s.cmd('RCPT TO:<"unterminated @corp.example>', '501 5.1.3');
    await s.cmd('RCPT TO:<"a b"@corp.example> BOGUS=1', '555 5.5.4');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    const m = h.queue.accepted[0]!;
    assert.equal(m.envelope.mailFrom, '"john smith"@sender.example');
    assert.deepEqual(m.envelope.recipients, [{ address: '"a b>c"@corp.example', notify: ['NEVER'] }]);
  } finally {
    await h.close();
  }
});
