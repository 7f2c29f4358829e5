// One `smtp.transaction` line per transaction with the trace; no password or body in any log line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { createLogger } from '../../src/log/logger.js';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness } from '../helpers/fakes.js';
import { accept } from '../../src/pipeline/verdict.js';

test('transaction summary line, auth events, and no secrets or bodies in the log', async () => {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      raw.push(chunk.toString());
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const h = await startHarness({ listeners: ['submission'], log: createLogger('debug', sink) });
  h.pipeline.hooks.auth = (i) => (i.auth!.password === 'Sup3rSecret' ? accept() : { kind: 'next' });
  try {
    const s = await openSmtp(h.ports.submission!);
    await s.expect('220 ');
    await s.cmd('EHLO c.example', '250');
    await s.cmd('STARTTLS', '220');
    const sock = tlsConnect({ socket: s.sock, rejectUnauthorized: false });
    await new Promise((r) => sock.once('secureConnect', r));
    const t = new SmtpTranscript(sock);
    await t.cmd('EHLO c.example', '250');
    await t.cmd(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0WrongPass1').toString('base64')}`, '535 5.7.8');
    await t.cmd(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0Sup3rSecret').toString('base64')}`, '235 2.7.0');
    await t.cmd('MAIL FROM:<alice@example.test>', '250');
    await t.cmd('RCPT TO:<bob@foreign.example>', '250');
    await t.cmd('DATA', '354');
    await t.cmd('Subject: s\r\n\r\nBODYMARKER-42\r\n.', '250 2.0.0');
    t.close();
  } finally {
    await h.close();
  }
  const tx = lines.filter((l) => l.evt === 'smtp.transaction');
  assert.equal(tx.length, 1);
  const l = tx[0]!;
  assert.equal(l.qid, h.queue.accepted[0]!.id);
  assert.equal(l.authUser, 'alice@example.test');
  assert.equal(l.from, 'alice@example.test');
  assert.deepEqual(l.rcpts, ['bob@foreign.example']);
  assert.equal(typeof l.size, 'number');
  assert.equal(typeof l.ms, 'number');
  assert.ok(Array.isArray(l.trace));
  assert.ok(lines.some((x) => x.evt === 'smtp.auth.failed'));
  assert.ok(lines.some((x) => x.evt === 'smtp.auth.ok'));
  const all = raw.join('');
  assert.ok(!all.includes('Sup3rSecret') && !all.includes('WrongPass1'), 'no password in the log');
  assert.ok(!all.includes('BODYMARKER-42'), 'no body in the log');
});
