// Hostile input against the real daemon: SMTP smuggling payloads, NUL bytes, oversize messages
// (declared and not), a 2 MB line, a burst of pipelined commands. Each gets its reply; a client
// sending at the same time is unaffected; afterwards nothing half-written is left in the spool
// or any mailbox, and no smuggled transaction became a message.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { pythonJson, READ_MAILDIR } from '../helpers/python.js';

const SMUGGLE_ENDINGS = { 'LF.LF': '\n.\n', 'CR.CR': '\r.\r', 'LF.CRLF': '\n.\r\n', 'CRLF.LF': '\r\n.\n' };

async function listFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

describe('hostile input', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({ relay: { networks: [] }, smtp: { max_message_size: '100K', max_recipients: 5 } });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  async function session() {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO hostile.example', '250');
    return s;
  }

  for (const [name, ending] of Object.entries(SMUGGLE_ENDINGS)) {
    it(`smuggling with ${name} never starts a second transaction`, async () => {
      const s = await session();
      await s.cmd('MAIL FROM:<a@remote.example>', '250');
      await s.cmd('RCPT TO:<alice@example.test>', '250');
      await s.cmd('DATA', '354');
      s.send(
        `Subject: outer ${name}\r\n\r\nhello${ending}MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: SMUGGLED\r\n\r\nx\r\n.`,
      );
      // Default policy: bare CR/LF refuses the whole message (Postfix smtpd_forbid_bare_newline).
      await s.expect('550 5.6.11');
      // The session goes on, in a clean state.
      await s.cmd('RCPT TO:<alice@example.test>', '503');
      s.close();
    });
  }

  it('NUL bytes in DATA are refused', async () => {
    const s = await session();
    await s.cmd('MAIL FROM:<a@remote.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    s.send('Subject: nul\r\n\r\nbad\0byte\r\n.');
    const r = await s.reply();
    assert.match(r ?? '', /^5\d\d 5\.6\.\d+ /);
    s.close();
  });

  it('declared SIZE over the limit is refused at MAIL, undeclared at the end of DATA', async () => {
    const s = await session();
    await s.cmd('MAIL FROM:<a@remote.example> SIZE=200000', '552 5.3.4');
    await s.cmd('MAIL FROM:<a@remote.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    s.send(`Subject: big\r\n\r\n${('y'.repeat(998) + '\r\n').repeat(110)}.`);
    await s.expect('552 5.3.4');
    s.close();
  });

  it('too many recipients get 452 4.5.3', async () => {
    const s = await session();
    await s.cmd('MAIL FROM:<a@remote.example>', '250');
    for (let i = 0; i < 5; i++) await s.cmd(`RCPT TO:<alice+${i}@example.test>`, '250');
    await s.cmd('RCPT TO:<alice+5@example.test>', '452 4.5.3');
    s.close();
  });

  it('a 2 MB line is refused and another client is unaffected meanwhile', async () => {
    const bad = await session();
    const good = await session();
    bad.send('NOOP ' + 'A'.repeat(2 * 1024 * 1024));
    const r = await bad.reply();
    assert.ok(r === null || /^(500 5\.5\.[26]|421 4\.\d\.\d) /.test(r), `got ${r}`);
    await good.cmd('MAIL FROM:<a@remote.example>', '250');
    await good.cmd('RCPT TO:<alice@example.test>', '250');
    await good.cmd('DATA', '354');
    await good.cmd('Subject: legit\r\n\r\nlegit body\r\n.', '250 2.0.0');
    bad.close();
    good.close();
  });

  it('1,000 pipelined commands in one write get 1,000 replies', async () => {
    const s = await session();
    s.send(Array.from({ length: 1000 }, () => 'NOOP').join('\r\n'));
    for (let i = 0; i < 1000; i++) await s.expect('250');
    await s.cmd('QUIT', '221');
    s.close();
  });

  it('leaves no half-written file in the spool and only the legitimate message in the mailbox', async () => {
    // Give delivery a moment to finish the one legitimate message.
    const path = join(d.dataDir, 'mail', 'example.test', 'alice');
    let msgs: { bytes: string }[] = [];
    for (let i = 0; i < 100; i++) {
      msgs = await pythonJson<{ bytes: string }[]>(READ_MAILDIR, [path, '']).catch(() => []);
      if (msgs.length >= 1 && (await listFiles(join(d.dataDir, 'spool'))).length === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(msgs.length, 1);
    assert.match(msgs[0]!.bytes, /Subject: legit/);
    assert.doesNotMatch(msgs.map((m) => m.bytes).join(''), /SMUGGLED/);
    assert.deepEqual(await listFiles(join(d.dataDir, 'spool')), [], 'spool is empty once delivered');
    assert.deepEqual(await listFiles(join(path, 'tmp')), [], 'no Maildir tmp leftovers');
  });
});
