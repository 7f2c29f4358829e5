// End to end, the Sieve gateway context: `postern start` with the sieve plugin running an admin
// script from a rules file in the test's folder (a path relative to the config file), messages
// sent with nodemailer; each outcome checked at the SMTP reply and in the Maildirs (Python's
// mailbox module).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { readMaildir as maildir, waitFor } from '../helpers/wait.js';


const RULES = `# gateway rules for the e2e test
require ["reject", "envelope", "body", "fileinto", "editheader"];
if header :contains "subject" "reject-by-header" { reject "Refused by header rule"; stop; }
if body :text :contains "reject-by-body" { reject "Refused by body rule"; stop; }
if envelope :domain "from" "blocked.example" { reject "Refused by envelope rule"; stop; }
if header :contains "subject" "please-discard" { discard; stop; }
if header :contains "subject" "please-redirect" { redirect "bob@example.test"; stop; }
if header :contains "subject" "please-quarantine" { fileinto "Quarantine"; stop; }
addheader "X-Postern-Rules" "checked";
`;




const msg = (subject: string, body = 'Hello.') =>
  [`From: Sender <sender@remote.example>`, 'To: someone@example.test', `Subject: ${subject}`, `Message-ID: <${subject}@remote.example>`, '', body, ''].join('\r\n');

describe('sieve gateway (admin rules) end to end', () => {
  let d: RunningDaemon;
  let t: nodemailer.Transporter;
  const send = (to: string, subject: string, opts: { from?: string; body?: string } = {}) =>
    t.sendMail({ envelope: { from: opts.from ?? 'sender@remote.example', to: [to] }, raw: msg(subject, opts.body) });

  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-sieve-gw-'));
    await mkdir(join(dir, 'rules'));
    await writeFile(join(dir, 'rules', 'gateway.sieve'), RULES);
    d = await startDaemon({ plugins: ['relay-acl', { sieve: { scripts: ['rules/gateway.sieve'] } }] }, { dir });
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], `pw-${u}\n`);
      assert.equal(r.code, 0, r.stderr);
    }
    t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, tls: { rejectUnauthorized: false } });
  });
  after(async () => {
    t?.close();
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('rejects by header, by body and by envelope with 550 5.7.1 and the reason', async () => {
    const cases: [() => Promise<unknown>, string][] = [
      [() => send('frank@example.test', 'reject-by-header'), '550 5.7.1 Refused by header rule'],
      [() => send('frank@example.test', 'plain', { body: 'this has reject-by-body inside' }), '550 5.7.1 Refused by body rule'],
      [() => send('frank@example.test', 'plain', { from: 'someone@blocked.example' }), '550 5.7.1 Refused by envelope rule'],
    ];
    for (const [p, want] of cases) {
      await assert.rejects(p(), (e: { response?: string }) => {
        assert.equal(e.response, want);
        return true;
      });
    }
    // Nothing reached the mailbox.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await maildir(d, 'frank'), []);
  });

  it('discards: 250, and nothing is stored', async () => {
    const info = await send('carol@example.test', 'please-discard');
    assert.match(info.response, /^250 2\.0\.0 /);
    // A control message after it proves delivery ran; only the control arrives.
    await send('carol@example.test', 'control');
    const got = await waitFor(() => maildir(d, 'carol'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    assert.match(got[0]!.bytes, /Subject: control/);
  });

  it('redirects to another local user', async () => {
    const info = await send('dave@example.test', 'please-redirect');
    assert.match(info.response, /^250 2\.0\.0 /);
    const got = await waitFor(() => maildir(d, 'bob'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    assert.match(got[0]!.bytes, /^Return-Path: <sender@remote\.example>\nDelivered-To: bob@example\.test\n/);
    assert.match(got[0]!.bytes, /Subject: please-redirect/);
    assert.deepEqual(await maildir(d, 'dave'), []);
  });

  it('quarantines: fileinto "Quarantine" lands in .Quarantine of the recipient', async () => {
    const info = await send('erin@example.test', 'please-quarantine');
    assert.match(info.response, /^250 2\.0\.0 /);
    const got = await waitFor(() => maildir(d, 'erin', 'Quarantine'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    assert.match(got[0]!.bytes, /Subject: please-quarantine/);
    assert.deepEqual(await maildir(d, 'erin'), []);
  });

  it('adds a header to the delivered message and traces the rules in the transaction log', async () => {
    const info = await send('alice@example.test', 'ordinary');
    assert.match(info.response, /^250 2\.0\.0 /);
    const got = await waitFor(() => maildir(d, 'alice'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    assert.match(got[0]!.bytes, /\nX-Postern-Rules: checked\n/);
    // The rejected transactions' log lines name the plugin that decided.
    const line = d.logs.find((l) => l.evt === 'smtp.transaction' && (l.rcpts as string[]).includes('frank@example.test') && l.outcome === 'reject');
    assert.ok(line, 'the rejected transaction was logged');
    assert.ok((line.trace as { plugin: string; verdict: string }[]).some((e) => e.plugin === 'sieve' && e.verdict === 'reject'), JSON.stringify(line.trace));
  });
});
