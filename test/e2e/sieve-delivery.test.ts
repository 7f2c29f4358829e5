// End to end, the Sieve delivery context: `postern start`, users' active scripts written into
// the daemon's embedded store from this process (the store is safe across processes; the keys
// are the ManageSieve repository's), messages sent with nodemailer and Python's smtplib.LMTP,
// mailboxes read back with Python's mailbox module (folders and flags).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { readMaildir as maildir, waitFor } from '../helpers/wait.js';

import { createEmbeddedStore, type EmbeddedStore } from '../../src/store/embedded.js';
import { pythonJson } from '../helpers/python.js';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';




const msg = (from: string, to: string, subject: string, extra: string[] = []) =>
  [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Message-ID: <${subject.replace(/\W/g, '')}-${Date.now()}@example.test>`, ...extra, '', 'Hello.', ''].join('\r\n');

describe('sieve delivery (user scripts) end to end', () => {
  let d: RunningDaemon;
  let store: EmbeddedStore;
  let t: nodemailer.Transporter;
  const send = (from: string, to: string, subject: string, extra: string[] = []) => t.sendMail({ envelope: { from, to: [to] }, raw: msg(from, to, subject, extra) });
  const activate = async (user: string, script: string) => {
    await store.hset(`sieve:scripts:${user}`, 'main', script);
    await store.set(`sieve:active:${user}`, 'main');
  };

  before(async () => {
    d = await startDaemon({ plugins: ['relay-acl'] });
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'gus', 'hal', 'ivy']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], `pw-${u}\n`);
      assert.equal(r.code, 0, r.stderr);
    }
    store = createEmbeddedStore(d.dataDir);
    t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, tls: { rejectUnauthorized: false } });
  });
  after(async () => {
    t?.close();
    await store?.close();
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('fileinto with flags lands in the Maildir++ folder with the flag letters', async () => {
    await activate(
      'alice@example.test',
      'require ["fileinto", "imap4flags", "mailbox"];\nif header :contains "subject" "report" {\n  fileinto :create :flags ["\\\\Seen", "\\\\Flagged"] "Work/Reports";\n}\n',
    );
    await send('boss@remote.example', 'alice@example.test', 'weekly report');
    await send('friend@remote.example', 'alice@example.test', 'lunch');
    const work = await waitFor(() => maildir(d, 'alice', 'Work.Reports'), (m) => m.length >= 1);
    assert.equal(work.length, 1);
    assert.match(work[0]!.bytes, /Subject: weekly report/);
    assert.equal(work[0]!.flags, 'FS');
    assert.equal(work[0]!.subdir, 'cur');
    const inbox = await waitFor(() => maildir(d, 'alice'), (m) => m.length >= 1);
    assert.equal(inbox.length, 1);
    assert.match(inbox[0]!.bytes, /Subject: lunch/);
    assert.equal(inbox[0]!.flags, '');
  });

  it('LMTP: a redirect made before a 451 is not made again when the client sends the message again (Python smtplib.LMTP)', async () => {
    await activate('hal@example.test', 'require "copy";\nredirect :copy "ivy@example.test";\n');
    // hal's Maildir cannot be made for now: a file stands where it belongs.
    const box = join(d.dataDir, 'mail', 'example.test', 'hal');
    await writeFile(box, 'in the way');
    const lmtp = (raw: string) =>
      pythonJson<[number, string]>(
        `
import smtplib, sys, json
s = smtplib.LMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
s.mail('sender@remote.example')
s.rcpt('hal@example.test')
try:
    r = s.data(sys.stdin.read().encode())
except smtplib.SMTPDataError as e:
    r = (e.smtp_code, e.smtp_error)
s.quit()
print(json.dumps([r[0], r[1].decode()]))`,
        [String(d.ports.lmtp)],
        { input: raw },
      );
    const raw = msg('sender@remote.example', 'hal@example.test', 'forward me');
    const [code] = await lmtp(raw);
    assert.equal(code, 451);
    // The redirect went out with the first attempt.
    assert.equal((await waitFor(() => maildir(d, 'ivy'), (m) => m.length >= 1)).length, 1);
    await rm(box);
    const [again, text] = await lmtp(raw);
    assert.equal(again, 250, text);
    assert.equal((await maildir(d, 'hal')).length, 1);
    await waitFor(() => d.logs.filter((l) => l.evt === 'sieve.redirect.duplicate'), (l) => l.length >= 1);
    // A control message to ivy, sent after, is there; the resend's redirect is not.
    await send('sender@remote.example', 'ivy@example.test', 'control');
    const ivy = await waitFor(() => maildir(d, 'ivy'), (m) => m.length >= 2);
    assert.deepEqual(ivy.map((m) => /Subject: (.*)/.exec(m.bytes)?.[1]).sort(), ['control', 'forward me']);
  });

  it('vacation: one reply per sender and period, none to list or auto-submitted mail', async () => {
    await activate('bob@example.test', 'require "vacation";\nvacation :days 7 :subject "Out of office" "Back next week.";\n');
    await send('carol@example.test', 'bob@example.test', 'first');
    await send('carol@example.test', 'bob@example.test', 'second');
    await send('dave@example.test', 'bob@example.test', 'list mail', ['List-Id: <news.example.test>']);
    await send('erin@example.test', 'bob@example.test', 'robot mail', ['Auto-Submitted: auto-generated']);
    // Every message is kept by bob.
    assert.equal((await waitFor(() => maildir(d, 'bob'), (m) => m.length >= 4)).length, 4);
    const replies = await waitFor(() => maildir(d, 'carol'), (m) => m.length >= 1);
    assert.equal(replies.length, 1);
    const r = replies[0]!.bytes;
    assert.match(r, /^Return-Path: <>\n/);
    assert.match(r, /\nSubject: Out of office\n/);
    assert.match(r, /\nAuto-Submitted: auto-replied/);
    assert.match(r, /\nIn-Reply-To: <first-\d+@example\.test>\n/);
    assert.match(r, /\n\nBack next week\.\n$/);
    // The suppressed ones are logged with their reason; nothing reached dave or erin.
    const why = await waitFor(
      () => d.logs.filter((l) => l.evt === 'sieve.vacation.suppressed').map((l) => l.why),
      (w) => w.length >= 3,
    );
    assert.deepEqual([...why].sort(), ['already-replied', 'auto-submitted', 'list']);
    // A control reply to gus, queued after the suppressed ones, proves the queue has moved on.
    await send('gus@example.test', 'bob@example.test', 'control');
    assert.equal((await waitFor(() => maildir(d, 'gus'), (m) => m.length >= 1)).length, 1);
    assert.deepEqual(await maildir(d, 'dave'), []);
    assert.deepEqual(await maildir(d, 'erin'), []);
    assert.equal((await maildir(d, 'carol')).length, 1);
  });
});
