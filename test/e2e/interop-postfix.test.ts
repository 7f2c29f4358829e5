// Interop: a real Postfix (Debian's package, a private instance from test/helpers/postfix.ts) as
// the `smtp://` next hop of a `routes` entry. Postern relays messages to it; Postfix stores them
// with virtual(8) in an mbox file and a Maildir, which Python's `mailbox` reads back: each
// message arrives exactly once, intact. A recipient Postfix refuses at RCPT comes back to the
// local sender as an RFC 3464 bounce. Postfix missing → the test fails and says what to install.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startPostfix, type RunningPostfix } from '../helpers/postfix.js';
import { messageIdOf, readDsns, spoolCount, submit, until } from '../helpers/interop.js';

const N = 20;

describe('interop: Postfix as an smtp:// next hop', () => {
  let pf: RunningPostfix | undefined;
  let d: RunningDaemon | undefined;

  before(async () => {
    pf = await startPostfix({ mailboxes: { 'corp.example': { alice: 'mbox', bob: 'maildir' } } });
    d = await startDaemon({
      routes: { 'corp.example': `smtp://127.0.0.1:${pf.port}` },
      outbound: { tls: 'none', retry: ['500ms'] },
    }, { timeoutMs: 60_000 });
    const r = await d.cli(['user', 'add', 'sender@example.test', '--no-password']);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    // Both are stopped whatever happened above, the server even if stopping Postern failed.
    try {
      await d?.stop();
    } finally {
      await pf?.stop();
      if (d) await removeDir(d.dir);
    }
  });

  it(`relays ${N} messages; each lands exactly once in the Postfix-delivered mbox / Maildir`, async () => {
    const messages = Array.from({ length: N }, (_, i) => ({
      messageId: `<pf-${i}@example.test>`,
      // Every fifth message has two recipients: one transaction, two mailboxes.
      to: i % 5 === 0 ? ['alice@corp.example', 'bob@corp.example'] : ['alice@corp.example'],
    }));
    await submit(d!, 'sender@example.test', messages);
    const forBob = messages.filter((m) => m.to.includes('bob@corp.example')).map((m) => m.messageId);

    // Postern keeps each message spooled until Postfix has queued it, and Postfix keeps it queued
    // until virtual(8) has stored it: once both queues are empty, everything has arrived and
    // nothing more can, so the mailboxes are read once.
    await until("Postern's queue empty", async () => (await spoolCount(d!)) === 0);
    await until("Postfix's queue empty", async () => (await pf!.queueSize()) === 0);
    const alice = await pf!.readMailbox('alice@corp.example');
    const bob = await pf!.readMailbox('bob@corp.example');
    const sorted = (xs: (string | undefined)[]) => [...xs].sort();
    assert.deepEqual(sorted(alice.map((m) => messageIdOf(m.bytes))), sorted(messages.map((m) => m.messageId)), 'alice: each message once');
    assert.deepEqual(sorted(bob.map((m) => messageIdOf(m.bytes))), sorted(forBob), 'bob: each message once');

    const one = alice.find((m) => messageIdOf(m.bytes) === '<pf-3@example.test>')!;
    assert.match(one.from_ ?? '', /^sender@example\.test /, 'mbox From_ line carries the envelope sender');
    assert.match(one.bytes, /^Return-Path: <sender@example\.test>$/m);
    // Postfix's Received line names Postern's EHLO; Postern's own Received line is below it.
    assert.match(one.bytes, /^Received: from mx\.example\.test \(\S+ \[127\.0\.0\.1\]\)\s+by postfix\.interop\.test/m);
    assert.match(one.bytes, /^Received: from .*\n?\s*by mx\.example\.test/m);
    // Dot-stuffing undone on both hops; the long line intact.
    assert.match(one.bytes, /\n\.a line that starts with a dot\n/);
    assert.match(one.bytes, new RegExp(`\\n${'x'.repeat(900)}\\n`));
  });

  it('a recipient Postfix refuses (550 5.1.1) bounces to the local sender; the other recipient gets the message once', async () => {
    await submit(d!, 'sender@example.test', [{ messageId: '<pf-ghost@example.test>', to: ['ghost@corp.example', 'bob@corp.example'] }]);
    await until("Postern's queue empty", async () => (await spoolCount(d!)) === 0);
    await until("Postfix's queue empty", async () => (await pf!.queueSize()) === 0);
    await until('the bounce in the sender Maildir', async () => (await readDsns(d!, 'sender')).length >= 1);
    const dsns = await readDsns(d!, 'sender');
    assert.equal(dsns.length, 1);
    const dsn = dsns[0]!;
    assert.equal(dsn.type, 'multipart/report');
    assert.equal(dsn.report_type, 'delivery-status');
    assert.deepEqual(dsn.parts, ['text/plain', 'message/delivery-status', 'message/rfc822']);
    const rcpt = dsn.groups.slice(1);
    assert.equal(rcpt.length, 1, 'only the refused recipient is reported');
    assert.equal(rcpt[0]!['Final-Recipient'], 'rfc822; ghost@corp.example');
    assert.equal(rcpt[0]!.Action, 'failed');
    assert.equal(rcpt[0]!.Status, '5.1.1');
    assert.match(rcpt[0]!['Diagnostic-Code'] ?? '', /^smtp; 550 5\.1\.1 <ghost@corp\.example>: Recipient address rejected/);
    const bob = await pf!.readMailbox('bob@corp.example');
    assert.equal(bob.filter((m) => messageIdOf(m.bytes) === '<pf-ghost@example.test>').length, 1);
  });
});
