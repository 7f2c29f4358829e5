// Hostile input: SMTP smuggling, bare newlines, NUL, long lines, oversize, pipelining floods,
// early talkers, HTTP on the SMTP port, unknown commands, too many recipients, connection limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';
import nodemailer from 'nodemailer';

async function ready(h: Harness): Promise<SmtpTranscript> {
  const s = await openSmtp(h.ports.smtp!);
  await s.expect('220 ');
  await s.cmd('EHLO client.example', '250');
  return s;
}

async function inData(h: Harness): Promise<SmtpTranscript> {
  const s = await ready(h);
  await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
  await s.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
  await s.cmd('DATA', '354');
  return s;
}

// Each payload tries to end DATA early with a non-canonical terminator and start a second
// transaction (for bob) inside the first one.
const SMUGGLE = ['\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r.\r\n', '\n.\r'];

for (const bareNewline of ['reject', 'normalize'] as const) {
  for (const term of SMUGGLE) {
    test(`smuggling ${JSON.stringify(term)} with bare_newline=${bareNewline} never makes a second message`, async () => {
      const h = await startHarness({ config: { smtp: { bare_newline: bareNewline } } });
      h.directory.users.set('bob@example.test', 'x');
      try {
        const s = await inData(h);
        const payload =
          'Subject: first\r\n\r\nbody' +
          term +
          'MAIL FROM:<evil@sender.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n';
        s.send(Buffer.from(payload, 'latin1'));
        const first = await s.reply();
        // The real end of DATA is the CRLF.CRLF after "evil": one reply for the one message.
        if (bareNewline === 'reject') assert.match(first ?? '', /^550 5\.6\.11 /);
        else assert.match(first ?? '', /^250 2\.0\.0 /);
        await s.cmd('NOOP', '250 2.0.0');
        s.close();
        assert.ok(h.queue.accepted.length <= 1);
        if (bareNewline === 'reject') assert.equal(h.queue.accepted.length, 0);
        for (const m of h.queue.accepted) {
          assert.deepEqual(
            m.envelope.recipients.map((r) => r.address),
            ['alice@example.test'],
          );
          assert.equal(m.envelope.mailFrom, 'a@sender.example');
          // Normalized: the would-be commands stay inside the one message's body.
          assert.match(m.message.toString('latin1'), /MAIL FROM:<evil@sender\.example>/);
          assert.ok(!/[^\r]\n|\r(?!\n)/.test(m.message.toString('latin1')), 'only CRLF line ends are queued');
        }
      } finally {
        await h.close();
      }
    });
  }
}

test('split terminator across writes and a dot-stuffed line do not end DATA early', async () => {
  const h = await startHarness();
  try {
    const s = await inData(h);
    s.send(Buffer.from('Subject: x\r\n\r\n..leading dot\r\n', 'latin1'));
    s.send(Buffer.from('last\r', 'latin1'));
    await new Promise((r) => setTimeout(r, 20));
    s.send(Buffer.from('\n.', 'latin1'));
    await new Promise((r) => setTimeout(r, 20));
    s.send(Buffer.from('\r\n', 'latin1'));
    await s.expect('250 2.0.0');
    s.close();
    assert.equal(h.queue.accepted.length, 1);
    assert.ok(h.queue.accepted[0]!.message.toString().endsWith('\r\n\r\n.leading dot\r\nlast\r\n'));
  } finally {
    await h.close();
  }
});

test('NUL in DATA → 554 5.6.0, nothing queued, session continues', async () => {
  const h = await startHarness();
  try {
    const s = await inData(h);
    s.send(Buffer.from('Subject: x\r\n\r\na\x00b\r\n.\r\n', 'latin1'));
    await s.expect('554 5.6.0');
    await s.cmd('RSET', '250 2.0.0');
    s.close();
    assert.equal(h.queue.accepted.length, 0);
  } finally {
    await h.close();
  }
});

test('a DATA line over max_line_length → 552 5.3.4 after the end of data', async () => {
  const h = await startHarness({ config: { smtp: { max_line_length: 1000 } } });
  try {
    const s = await inData(h);
    s.send(`Subject: x\r\n\r\n${'y'.repeat(1000)}\r\n${'z'.repeat(1001)}\r\n.`);
    await s.expect('552 5.3.4');
    s.close();
    assert.equal(h.queue.accepted.length, 0);
  } finally {
    await h.close();
  }
});

test('oversize: declared SIZE= refused at MAIL, undeclared refused after DATA, both 552 5.3.4', async () => {
  const h = await startHarness({ config: { smtp: { max_message_size: 2000 } } });
  try {
    const s = await ready(h);
    await s.cmd('MAIL FROM:<a@b.example> SIZE=2001', '552 5.3.4');
    await s.cmd('MAIL FROM:<a@b.example> SIZE=100', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    s.send(`Subject: x\r\n\r\n${('a'.repeat(70) + '\r\n').repeat(40)}.`);
    await s.expect('552 5.3.4');
    await s.cmd('NOOP', '250');
    s.close();
    assert.equal(h.queue.accepted.length, 0);
  } finally {
    await h.close();
  }
});

test('a 2 MB command line → 421 4.5.2 and close; the server keeps serving', async () => {
  const h = await startHarness();
  try {
    const s = await ready(h);
    s.send('NOOP ' + 'x'.repeat(2 * 1024 * 1024));
    await s.expect('421 4.5.2');
    assert.equal(await s.reply(), null);
    const s2 = await ready(h);
    await s2.cmd('NOOP', '250');
    s2.close();
  } finally {
    await h.close();
  }
});

test('too many recipients → 452 4.5.3', async () => {
  const h = await startHarness({ config: { smtp: { max_recipients: 3 } } });
  try {
    for (const u of ['b', 'c', 'd']) h.directory.users.set(`${u}@example.test`, 'x');
    const s = await ready(h);
    await s.cmd('MAIL FROM:<a@b.example>', '250');
    for (const u of ['alice', 'b', 'c']) await s.cmd(`RCPT TO:<${u}@example.test>`, '250 2.1.5');
    await s.cmd('RCPT TO:<d@example.test>', '452 4.5.3');
    s.close();
  } finally {
    await h.close();
  }
});

test('1000 pipelined commands in one write get 1000 proper replies; another client is unaffected', async () => {
  const h = await startHarness();
  try {
    const s = await ready(h);
    const other = await ready(h);
    const lines: string[] = [];
    for (let i = 0; i < 1000; i++) lines.push(i % 3 === 0 ? 'NOOP' : i % 3 === 1 ? 'RSET' : 'MAIL FROM:<a@b.example>');
    s.send(Buffer.from(lines.join('\r\n') + '\r\n'));
    // The other client is served while the burst is still being worked through, not after it.
    await other.cmd('NOOP', '250 2.0.0');
    assert.ok(s.received < 1000, `the burst had ${s.received} of 1000 replies when the other client got its NOOP reply`);
    for (let i = 0; i < 1000; i++) {
      const r = await s.reply();
      assert.ok(r !== null);
      assert.match(r, /^250 2\.(0\.0|1\.0) /, `reply ${i}: ${r}`);
    }
    await s.cmd('QUIT', '221');
    other.close();
    s.close();
  } finally {
    await h.close();
  }
});

test('unknown commands → 500 5.5.2; the max_bad_commands-th → 421 4.7.0 and close', async () => {
  const h = await startHarness({ config: { smtp: { max_bad_commands: 3 } } });
  try {
    const s = await ready(h);
    await s.cmd('FOO', '500 5.5.2');
    await s.cmd('WIZ hack', '500 5.5.2');
    await s.cmd('BAR', '421 4.7.0');
    assert.equal(await s.reply(), null);
  } finally {
    await h.close();
  }
});

test('early talker → 554 5.5.1 instead of the greeting, then close', async () => {
  const h = await startHarness({ config: { smtp: { greeting_delay: 300 } } });
  try {
    const s = await openSmtp(h.ports.smtp!);
    s.send('EHLO fast.example');
    await s.expect('554 5.5.1');
    assert.equal(await s.reply(), null);
    assert.equal(h.pipeline.calls.filter((c) => c.stage === 'helo').length, 0);
  } finally {
    await h.close();
  }
});

for (const line of ['GET / HTTP/1.1', 'POST /submit HTTP/1.0', 'CONNECT mx.example.test:25 HTTP/1.1', 'Host: mx.example.test']) {
  test(`HTTP on the SMTP port (${line}) → 554 5.5.1 and close`, async () => {
    const h = await startHarness();
    try {
      const s = await openSmtp(h.ports.smtp!);
      await s.expect('220 ');
      s.send(line);
      await s.expect('554 5.5.1');
      assert.equal(await s.reply(), null);
    } finally {
      await h.close();
    }
  });
}

test('connection limits: total and per IP → 421 4.7.0 at connect', async () => {
  const h = await startHarness({ config: { smtp: { max_connections_per_ip: 2 } } });
  try {
    const a = await openSmtp(h.ports.smtp!);
    await a.expect('220 ');
    const b = await openSmtp(h.ports.smtp!);
    await b.expect('220 ');
    const c = await openSmtp(h.ports.smtp!);
    await c.expect('421 4.7.0');
    assert.equal(await c.reply(), null);
    a.close();
    await new Promise((r) => setTimeout(r, 50));
    const d = await openSmtp(h.ports.smtp!);
    await d.expect('220 ');
    b.close();
    d.close();
  } finally {
    await h.close();
  }
  const h2 = await startHarness({ config: { smtp: { max_connections: 1 } } });
  try {
    const a = await openSmtp(h2.ports.smtp!);
    await a.expect('220 ');
    const b = await openSmtp(h2.ports.smtp!);
    await b.expect('421 4.7.0');
    a.close();
  } finally {
    await h2.close();
  }
});

test('connection limits: a STARTTLS session gives its slot back when it ends (nodemailer: EHLO, STARTTLS, EHLO, QUIT)', async () => {
  const h = await startHarness({ config: { smtp: { max_connections_per_ip: 2 } } });
  try {
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: h.ports.smtp!, secure: false, requireTLS: true, tls: { rejectUnauthorized: false } });
    // Sequential sessions, each over TLS and closed: more of them than the limit.
    for (let i = 0; i < 4; i++) assert.equal(await client.verify(), true);
    client.close();
    await new Promise((r) => setTimeout(r, 100));
    const a = await openSmtp(h.ports.smtp!);
    await a.expect('220 ');
    const b = await openSmtp(h.ports.smtp!);
    await b.expect('220 ');
    a.close();
    b.close();
  } finally {
    await h.close();
  }
});

test('after STARTTLS the plugins see the session as secure (nodemailer with requireTLS)', async () => {
  const h = await startHarness();
  try {
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: h.ports.smtp!, secure: false, requireTLS: true, tls: { rejectUnauthorized: false } });
    await client.sendMail({ from: 'a@sender.example', to: 'alice@example.test', subject: 'tls', text: 'over TLS' });
    client.close();
    const mail = h.pipeline.calls.find((c) => c.stage === 'mail');
    assert.equal(mail?.input.session.secure, true);
  } finally {
    await h.close();
  }
});
