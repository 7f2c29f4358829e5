// End to end, the Sieve gateway context per recipient: `postern start` with two admin scripts,
// an envelope-only one first (run at RCPT) and one that also reads the message (run at DATA).
// Python's smtplib (SMTP and LMTP) is the client; mailboxes are read with Python's mailbox.
//   - an envelope-only reject refuses at RCPT (550 5.7.1), SMTP and LMTP;
//   - on LMTP a reject for one recipient is that recipient's 550 5.7.1, the others are delivered;
//   - recipients whose runs edit headers differently each get their own copy.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { pythonJson } from '../helpers/python.js';
import { readMaildir as maildir, waitFor } from '../helpers/wait.js';

const EARLY = `# envelope questions only: runs at RCPT
require ["reject", "envelope"];
if envelope :domain :is "from" "early.example" { reject "No mail from early.example"; stop; }
if envelope :localpart :is "to" "closed" { reject "This mailbox is closed"; stop; }
`;

const LATE = `# reads the message: runs at DATA, once per recipient
require ["reject", "envelope", "editheader"];
if allof (header :contains "subject" "split", envelope :localpart :is "to" "gina") { reject "gina refuses split mail"; stop; }
if allof (header :contains "subject" "split", envelope :localpart :is "to" "ivy") { addheader "X-For" "ivy"; }
if allof (header :contains "subject" "split", envelope :localpart :is "to" "jack") { addheader :last "X-For" "jack"; deleteheader "X-Drop"; }
`;

/**
 * One transaction with Python's smtplib; prints every reply. LMTP's DATA gives one reply per
 * accepted recipient (RFC 2033 §4.2), which smtplib.LMTP.sendmail does not read, so the
 * transaction is driven command by command.
 */
const TRANSACTION = `
import smtplib, sys, json
proto, port, sender, rcpts, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.argv[5]
s = smtplib.LMTP("127.0.0.1", port) if proto == "lmtp" else smtplib.SMTP("127.0.0.1", port)
s.ehlo("client.example")  # smtplib.LMTP sends LHLO for it
out = {"mail": list(s.mail(sender)), "rcpt": [], "data": []}
out["mail"][1] = out["mail"][1].decode()
accepted = 0
for r in rcpts:
    code, text = s.rcpt(r)
    out["rcpt"].append([code, text.decode()])
    if code == 250:
        accepted += 1
if accepted:
    msg = "From: <%s>\\r\\nTo: undisclosed:;\\r\\nSubject: %s\\r\\nX-Drop: yes\\r\\nMessage-ID: <%s@client.example>\\r\\n\\r\\nHello.\\r\\n" % (sender, subject, subject)
    code, text = s.docmd("DATA")
    assert code == 354, (code, text)
    s.send(smtplib.quotedata(msg).encode() + b"\\r\\n.\\r\\n")
    for _ in range(accepted if proto == "lmtp" else 1):
        code, text = s.getreply()
        out["data"].append([code, text.decode()])
s.quit()
print(json.dumps(out))
`;

interface Transcript {
  mail: [number, string];
  rcpt: [number, string][];
  data: [number, string][];
}

describe('sieve gateway per recipient end to end (RCPT-time rules, LMTP replies, own copies)', () => {
  let d: RunningDaemon;
  const talk = (proto: 'smtp' | 'lmtp', from: string, to: string[], subject: string) =>
    pythonJson<Transcript>(TRANSACTION, [proto, String(d.ports[proto]), from, to.join(','), subject]);

  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-sieve-rcpt-'));
    await mkdir(join(dir, 'rules'));
    await writeFile(join(dir, 'rules', 'early.sieve'), EARLY);
    await writeFile(join(dir, 'rules', 'late.sieve'), LATE);
    d = await startDaemon({ plugins: ['relay-acl', { sieve: { scripts: ['rules/early.sieve', 'rules/late.sieve'] } }] }, { dir });
    for (const u of ['closed', 'gina', 'hank', 'ivy', 'jack', 'kate', 'liam']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], `pw-${u}\n`);
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('an envelope-only reject is 550 5.7.1 at RCPT (SMTP), and other recipients still go through', async () => {
    const t = await talk('smtp', 'someone@early.example', ['liam@example.test'], 'early-smtp');
    assert.equal(t.mail[0], 250);
    assert.deepEqual(t.rcpt, [[550, '5.7.1 No mail from early.example']]);
    assert.deepEqual(t.data, []);

    const u = await talk('smtp', 'someone@remote.example', ['closed@example.test', 'liam@example.test'], 'early-mixed');
    assert.deepEqual(u.rcpt[0], [550, '5.7.1 This mailbox is closed']);
    assert.equal(u.rcpt[1]![0], 250);
    assert.equal(u.data.length, 1);
    assert.equal(u.data[0]![0], 250);
    const got = await waitFor(() => maildir(d, 'liam'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    assert.match(got[0]!.bytes, /Subject: early-mixed/);
    assert.deepEqual(await maildir(d, 'closed'), []);
    // The refusal is in the transaction's trace, at the rcpt stage.
    const line = d.logs.find((l) => l.evt === 'smtp.rcpt.rejected' && l.rcpt === 'closed@example.test');
    assert.ok(line, 'the RCPT refusal was logged');
  });

  it('an envelope-only reject is 550 5.7.1 at RCPT on LMTP too', async () => {
    const t = await talk('lmtp', 'someone@early.example', ['liam@example.test'], 'early-lmtp');
    assert.deepEqual(t.rcpt, [[550, '5.7.1 No mail from early.example']]);
  });

  it('LMTP: a reject for one recipient is its own 550 5.7.1; the others are delivered', async () => {
    const t = await talk('lmtp', 'someone@remote.example', ['gina@example.test', 'hank@example.test'], 'split-lmtp');
    assert.deepEqual(
      t.rcpt.map((r) => r[0]),
      [250, 250],
    );
    assert.equal(t.data.length, 2, JSON.stringify(t.data));
    assert.deepEqual(t.data[0], [550, '5.7.1 gina refuses split mail']);
    assert.equal(t.data[1]![0], 250, JSON.stringify(t.data));
    const hank = await maildir(d, 'hank');
    assert.equal(hank.length, 1, 'hank got it at once (LMTP delivers before replying)');
    assert.match(hank[0]!.bytes, /Subject: split-lmtp/);
    assert.deepEqual(await maildir(d, 'gina'), []);
  });

  it('SMTP: the same refusal refuses the message (one reply for DATA)', async () => {
    const t = await talk('smtp', 'someone@remote.example', ['gina@example.test', 'kate@example.test'], 'split-smtp');
    assert.deepEqual(t.data, [[550, '5.7.1 gina refuses split mail']]);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await maildir(d, 'kate')).filter((m) => m.bytes.includes('split-smtp')).length, 0);
  });

  it('each recipient gets the header edits of its own run (SMTP)', async () => {
    const t = await talk('smtp', 'someone@remote.example', ['ivy@example.test', 'jack@example.test', 'kate@example.test'], 'split-copies');
    assert.equal(t.data[0]![0], 250, JSON.stringify(t));
    const [ivy, jack, kate] = await Promise.all(
      ['ivy', 'jack', 'kate'].map((u) => waitFor(() => maildir(d, u), (m) => m.some((x) => x.bytes.includes('split-copies')))),
    );
    const of = (list: { bytes: string }[]) => list.find((x) => x.bytes.includes('split-copies'))!.bytes;
    // ivy: X-For: ivy at the top, X-Drop kept.
    assert.match(of(ivy!), /\nX-For: ivy\n/);
    assert.doesNotMatch(of(ivy!), /X-For: jack/);
    assert.match(of(ivy!), /\nX-Drop: yes\n/);
    // jack: X-For: jack at the end of the header, X-Drop deleted.
    assert.match(of(jack!), /\nX-For: jack\n\n/);
    assert.doesNotMatch(of(jack!), /X-For: ivy|X-Drop/);
    // kate: untouched.
    assert.doesNotMatch(of(kate!), /X-For/);
    assert.match(of(kate!), /\nX-Drop: yes\n/);
    const line = d.logs.find((l) => l.evt === 'smtp.transaction' && Array.isArray(l.copies) && (l.rcpts as string[]).includes('ivy@example.test'));
    assert.ok(line, 'the transaction log lists the copies');
    assert.equal((line.copies as unknown[]).length, 3);
  });

  it('LMTP: a refused recipient, and two others with their own copies, in one transaction', async () => {
    const t = await talk('lmtp', 'someone@remote.example', ['ivy@example.test', 'gina@example.test', 'jack@example.test'], 'split-both');
    assert.equal(t.data.length, 3, JSON.stringify(t.data));
    assert.equal(t.data[0]![0], 250);
    assert.deepEqual(t.data[1], [550, '5.7.1 gina refuses split mail']);
    assert.equal(t.data[2]![0], 250);
    const ivy = (await maildir(d, 'ivy')).find((x) => x.bytes.includes('split-both'));
    const jack = (await maildir(d, 'jack')).find((x) => x.bytes.includes('split-both'));
    assert.ok(ivy && jack, 'both delivered before the replies');
    assert.match(ivy.bytes, /\nX-For: ivy\n/);
    assert.doesNotMatch(ivy.bytes, /X-For: jack/);
    assert.match(jack.bytes, /\nX-For: jack\n\n/);
    assert.equal((await maildir(d, 'gina')).filter((m) => m.bytes.includes('split-both')).length, 0);
  });
});
