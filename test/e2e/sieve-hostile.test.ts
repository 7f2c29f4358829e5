// End to end, hostile admin scripts at the gateway: `postern start` with a rules file that holds
// the bounded kinds (a pathological regex, an include loop, variables that double forever), then
// the same file rewritten into the kinds that must be refused at load (10,000 nested blocks, a
// huge string literal, a script over the size limit). Each is refused (logged, the last good
// version keeps running) or bounded (the run ends, the message is delivered), and the daemon
// keeps serving: a second client sending at the same time gets its 250 every time.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { readMaildir as maildir, waitFor } from '../helpers/wait.js';

const GOOD = `# bounded hostility: every run ends
require ["include", "regex", "variables", "editheader", "fileinto"];
if header :regex "subject" "(a|aa)*(a*)*b" { fileinto "Never"; }
if header :contains "subject" "loop-me" { include "loop"; }
set "a" "xxxxxxxxxx";
${'set "a" "${a}${a}${a}${a}";\n'.repeat(40)}set :length "n" "\${a}";
addheader "X-Rules" "v1 \${n}";
`;

/** Included by GOOD: includes itself (RFC 6609 §3.2 asks for a limit; a runtime error here). */
const LOOP = 'require "include";\ninclude "loop";\n';

const msg = (subject: string) =>
  [`From: <sender@remote.example>`, 'To: <someone@example.test>', `Subject: ${subject}`, `Message-ID: <${Math.random().toString(36).slice(2)}@remote.example>`, '', 'Hello.', ''].join('\r\n');

describe('hostile admin scripts through the daemon', () => {
  let d: RunningDaemon;
  let rules: string;
  let a: nodemailer.Transporter;
  let b: nodemailer.Transporter;
  const send = (t: nodemailer.Transporter, to: string, raw: string) => t.sendMail({ envelope: { from: 'sender@remote.example', to: [to] }, raw });

  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-sieve-hostile-'));
    await mkdir(join(dir, 'rules'));
    rules = join(dir, 'rules', 'gateway.sieve');
    await writeFile(rules, GOOD);
    await writeFile(join(dir, 'rules', 'loop.sieve'), LOOP);
    d = await startDaemon({ plugins: ['relay-acl', { sieve: { scripts: ['rules/gateway.sieve'] } }] }, { dir });
    for (const u of ['mia', 'noah']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], `pw-${u}\n`);
      assert.equal(r.code, 0, r.stderr);
    }
    const opts = { host: '127.0.0.1', port: d.ports.smtp, secure: false, tls: { rejectUnauthorized: false } };
    a = nodemailer.createTransport(opts);
    b = nodemailer.createTransport(opts);
  });
  after(async () => {
    a?.close();
    b?.close();
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  /** Sends the hostile message with one client and a plain one with another, at the same time. */
  async function alongside(hostile: () => Promise<{ response: string }>, subject: string): Promise<void> {
    const [h, other] = await Promise.all([hostile(), send(b, 'noah@example.test', msg(subject))]);
    assert.match(h.response, /^250 /);
    assert.match(other.response, /^250 /);
    const got = await waitFor(() => maildir(d, 'noah'), (m) => m.some((x) => x.bytes.includes(`Subject: ${subject}`)));
    assert.ok(got.length >= 1);
  }

  it('a pathological regex on a 30,000-character header runs bounded; another client is served meanwhile', async () => {
    // Folded into lines of 900 (RFC 5322 §2.1.1), unfolded to one 30,000-character value.
    const subject = Array.from({ length: 34 }, () => 'a'.repeat(900)).join('\r\n ');
    await alongside(() => send(a, 'mia@example.test', msg(subject)), 'control-regex');
    const got = await waitFor(() => maildir(d, 'mia'), (m) => m.length >= 1);
    assert.equal(got.length, 1);
    // No match (no "b"), and the variables stopped at their size limit (4096).
    assert.match(got[0]!.bytes, /\nX-Rules: v1 4096\n/);
    assert.deepEqual(await maildir(d, 'mia', 'Never'), []);
  });

  it('an include loop ends the run with a runtime error and the implicit keep', async () => {
    await alongside(() => send(a, 'mia@example.test', msg('loop-me')), 'control-loop');
    const got = await waitFor(() => maildir(d, 'mia'), (m) => m.some((x) => x.bytes.includes('Subject: loop-me')));
    const stored = got.find((x) => x.bytes.includes('Subject: loop-me'))!;
    // The whole run failed: its addheader is not kept, the message is (RFC 5228 §2.10.6).
    assert.doesNotMatch(stored.bytes, /X-Rules/);
    const warn = d.logs.find((l) => l.evt === 'plugin.sieve.rule' && l.status === 'runtime-error');
    assert.ok(warn, 'the runtime error is logged');
    assert.match(JSON.stringify(warn.errors), /include/);
  });

  const refusedAtLoad: [string, string, RegExp][] = [
    ['10,000 nested blocks', 'if true {'.repeat(10000) + 'keep;' + '}'.repeat(10000), /nested too deeply/],
    ['a 300,000-character string', `require "fileinto";\nfileinto "${'x'.repeat(300_000)}";\n`, /string longer than/],
    ['a script over 1 MB', '# filler\n'.repeat(120_000) + 'keep;\n', /too large/],
  ];
  for (const [i, [name, text, why]] of refusedAtLoad.entries()) {
    it(`${name}: refused when the file is reloaded; the last good version runs and others are served`, async () => {
      const before = d.logs.length;
      await writeFile(rules, text);
      // The file is looked at again at most once a second, by the next message.
      await new Promise((r) => setTimeout(r, 1100));
      // (No letter "b" in it: the good script files anything with a "b" into "Never".)
      const subject = `after-reload-${i}`;
      await alongside(() => send(a, 'mia@example.test', msg(subject)), `control-${subject}`);
      const err = await waitFor(
        () => d.logs.slice(before).find((l) => l.evt === 'plugin.sieve.compile_error'),
        (l) => l !== undefined,
      );
      assert.equal(err!.rule, 'gateway.sieve');
      assert.match(JSON.stringify(err!.errors), why);
      const got = await waitFor(() => maildir(d, 'mia'), (m) => m.some((x) => x.bytes.includes(`Subject: ${subject}`)));
      // Still the last good script: its header is there.
      assert.match(got.find((x) => x.bytes.includes(`Subject: ${subject}`))!.bytes, /\nX-Rules: v1 4096\n/);
    });
  }
});
