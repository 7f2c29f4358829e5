// Repeated RCPTs. RFC 2033 §4.2: after the final dot an LMTP server gives one reply per
// successful RCPT, in RCPT order, "even if there were multiple successful RCPT commands giving
// the same forward-path"; the message is delivered once per recipient all the same. Over SMTP a
// repeated RCPT changes nothing: one recipient, one reply after DATA.
//
// The client pipelines NOOP after the final dot, so a missing reply shows as the NOOP's 250
// taking its place instead of as a timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';
import { pythonJson } from '../helpers/python.js';
import { reject } from '../../src/pipeline/verdict.js';

const MSG = 'Subject: hi\r\nFrom: a@sender.example\r\n\r\nhello\r\n.';
const NOOP_REPLY = '250 2.0.0 OK';

async function lhlo(h: Harness): Promise<SmtpTranscript> {
  const s = await openSmtp(h.ports.lmtp!);
  await s.expect('220 ');
  await s.cmd('LHLO client.example', '250');
  await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
  return s;
}

/**
 * Sends the message with a NOOP pipelined after the final dot, and returns the replies that came
 * before the NOOP's: a missing reply shows as a shorter list, not as a wait.
 */
async function dataThenNoop(s: SmtpTranscript, message: string): Promise<string[]> {
  await s.cmd('DATA', '354');
  s.send(`${message}\r\nNOOP`);
  const replies: string[] = [];
  for (;;) {
    const r = await s.reply();
    assert.ok(r !== null, `the connection closed; after the dot: ${JSON.stringify(replies)}`);
    if (r === NOOP_REPLY) return replies;
    replies.push(r);
  }
}

test('LMTP: every accepted RCPT is answered after the dot, repeats and case variants included, in RCPT order', async () => {
  const h = await startHarness({ listeners: ['lmtp'] });
  try {
    h.directory.users.set('bob@example.test', 'x');
    h.queue.lmtpOutcome = (a) => (a.toLowerCase().startsWith('bob') ? { status: 'failed', code: 552, enhanced: '5.2.2', text: 'Mailbox full' } : { status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Delivered' });
    const s = await lhlo(h);
    for (const r of ['alice@example.test', 'ALICE@example.test', 'bob@example.test', 'alice@example.test', 'Bob@example.test']) await s.cmd(`RCPT TO:<${r}>`, '250 2.1.5');
    const replies = await dataThenNoop(s, MSG);
    // Each repeat hears its recipient's outcome: a failed delivery is failed for every RCPT naming it.
    assert.deepEqual(replies, ['250 2.0.0 Delivered', '250 2.0.0 Delivered', '552 5.2.2 Mailbox full', '250 2.0.0 Delivered', '552 5.2.2 Mailbox full']);
    s.close();
    // Delivered once per recipient: a repeat is not a second recipient.
    assert.equal(h.queue.delivered.length, 1);
    assert.deepEqual(h.queue.delivered[0]!.envelope.recipients.map((r) => r.address.toLowerCase()), ['alice@example.test', 'bob@example.test']);
  } finally {
    await h.close();
  }
});

test('LMTP: a refusal at DATA is repeated for every accepted RCPT, repeats included', async () => {
  const h = await startHarness({ listeners: ['lmtp'] });
  try {
    h.directory.users.set('bob@example.test', 'x');
    const rcpts = async (s: SmtpTranscript) => {
      for (const r of ['alice@example.test', 'bob@example.test', 'ALICE@example.test']) await s.cmd(`RCPT TO:<${r}>`, '250 2.1.5');
    };
    // The DataGuard's refusal (a bare LF in the message).
    let s = await lhlo(h);
    await rcpts(s);
    assert.deepEqual(await dataThenNoop(s, 'Subject: x\r\n\r\nbare\nline\r\n.'), Array(3).fill('550 5.6.11 Bare <CR> or <LF> in message; use <CRLF> line ends'));
    s.close();
    // A plugin's reject at the data stage.
    h.pipeline.hooks.data = () => reject(550, '5.7.1', 'Spam');
    s = await lhlo(h);
    await rcpts(s);
    assert.deepEqual(await dataThenNoop(s, MSG), Array(3).fill('550 5.7.1 Spam'));
    s.close();
    assert.equal(h.queue.delivered.length, 0);
  } finally {
    await h.close();
  }
});

test('LMTP: repeats count toward smtp.max_recipients, as each one is owed a reply', async () => {
  const h = await startHarness({ listeners: ['lmtp'], config: { smtp: { max_recipients: 2 } } });
  try {
    const s = await lhlo(h);
    await s.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await s.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await s.cmd('RCPT TO:<Alice@example.test>', '452 4.5.3 Too many recipients');
    assert.deepEqual(await dataThenNoop(s, MSG), Array(2).fill('250 2.0.0 Ok delivered'));
    s.close();
    assert.equal(h.queue.delivered[0]!.envelope.recipients.length, 1);
  } finally {
    await h.close();
  }
});

test('python smtplib.LMTP: a repeated RCPT gets its own reply, and the NOOP after it its own', async () => {
  const h = await startHarness({ listeners: ['lmtp'] });
  h.directory.users.set('bob@example.test', 'x');
  h.queue.lmtpOutcome = (a) => (a.startsWith('bob') ? { status: 'deferred', code: 451, enhanced: '4.2.0', text: 'Mailbox locked' } : { status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Delivered' });
  try {
    const out = await pythonJson<{ rcpt: number[]; data: [number, string][] | string; noop: [number, string] | null }>(
      `
import smtplib, socket, sys, json
s = smtplib.LMTP("127.0.0.1", int(sys.argv[1]), timeout=5)
s.ehlo("py.example")  # LMTP sends LHLO
s.mail("a@sender.example")
rcpts = ["alice@example.test", "bob@example.test", "alice@example.test"]
codes = [s.rcpt(r)[0] for r in rcpts]
# smtplib reads only the first reply after DATA; RFC 2033 sends one per successful RCPT.
data = [s.data("Subject: l\\r\\n\\r\\nx\\r\\n")]
noop = None
try:
    while len(data) < len(rcpts):
        data.append(s.getreply())
    noop = s.noop()
    out = [[c, m.decode()] for c, m in data]
except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected):
    out = "no more replies after %r" % [[c, m.decode()] for c, m in data]
print(json.dumps({"rcpt": codes, "data": out, "noop": noop and [noop[0], noop[1].decode()]}))
s.close()
`,
      [String(h.ports.lmtp)],
    );
    assert.deepEqual(out.rcpt, [250, 250, 250]);
    assert.deepEqual(out.data, [
      [250, '2.0.0 Delivered'],
      [451, '4.2.0 Mailbox locked'],
      [250, '2.0.0 Delivered'],
    ]);
    assert.deepEqual(out.noop, [250, '2.0.0 OK']);
    assert.equal(h.queue.delivered[0]!.envelope.recipients.length, 2);
  } finally {
    await h.close();
  }
});

test('SMTP: a repeated RCPT is still one recipient with one reply after DATA, and no repeat is limited', async () => {
  const h = await startHarness({ config: { smtp: { max_recipients: 2 } } });
  try {
    const s = await openSmtp(h.ports.smtp!);
    await s.expect('220 ');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
    for (const r of ['alice@example.test', 'ALICE@example.test', 'alice@example.test']) await s.cmd(`RCPT TO:<${r}>`, '250 2.1.5');
    const replies = await dataThenNoop(s, MSG);
    assert.equal(replies.length, 1);
    assert.match(replies[0]!, /^250 2\.0\.0 Ok: queued as Q/);
    s.close();
    assert.equal(h.queue.accepted.length, 1);
    assert.equal(h.queue.accepted[0]!.envelope.recipients.length, 1);
  } finally {
    await h.close();
  }
});
