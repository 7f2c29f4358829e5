// Interop: a real Dovecot (Debian's packages, a private instance from test/helpers/dovecot.ts)
// behind Postern, reached over LMTP: `lmtp://` on TCP and `lmtp+unix:` on its socket. Postern
// relays messages to it; Python's imaplib reads them back from that same Dovecot: each message
// arrives exactly once, intact. A recipient Dovecot refuses comes back to the local sender as an
// RFC 3464 bounce while the other recipients of the message get it. Dovecot missing → the test
// fails and says what to install.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { messageIdOf, readDsns, spoolCount, submit, until } from '../helpers/interop.js';

const N = 20;
const sorted = (xs: (string | undefined)[]) => [...xs].sort();

describe('interop: Dovecot LMTP as an lmtp:// and lmtp+unix: next hop', () => {
  let dv: RunningDovecot | undefined;
  let d: RunningDaemon | undefined;

  before(async () => {
    dv = await startDovecot({ users: { 'carol@shop.example': 'carol-pw', 'dave@shop.example': 'dave-pw', 'erin@store.example': 'erin-pw' } });
    d = await startDaemon({
      routes: {
        'shop.example': `lmtp://127.0.0.1:${dv.lmtpPort}`,
        'store.example': `lmtp+unix:${dv.lmtpSocket}`,
      },
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
      await dv?.stop();
      if (d) await removeDir(d.dir);
    }
  });

  it(`relays ${N} messages over LMTP (TCP); IMAP shows each exactly once`, async () => {
    const messages = Array.from({ length: N }, (_, i) => ({
      messageId: `<dv-${i}@example.test>`,
      // Every fourth message has two recipients: one LMTP transaction, one reply for each.
      to: i % 4 === 0 ? ['carol@shop.example', 'dave@shop.example'] : ['carol@shop.example'],
    }));
    await submit(d!, 'sender@example.test', messages);
    const forDave = messages.filter((m) => m.to.includes('dave@shop.example')).map((m) => m.messageId);

    // LMTP stores before it answers, and Postern keeps each message spooled until then: once
    // Postern's queue is empty everything has arrived and nothing more can, so IMAP reads once.
    await until("Postern's queue empty", async () => (await spoolCount(d!)) === 0);
    const carol = await dv!.readInbox('carol@shop.example');
    const dave = await dv!.readInbox('dave@shop.example');
    assert.deepEqual(sorted(carol.map((m) => messageIdOf(m.bytes))), sorted(messages.map((m) => m.messageId)), 'carol: each message once');
    assert.deepEqual(sorted(dave.map((m) => messageIdOf(m.bytes))), sorted(forDave), 'dave: each message once');

    const one = carol.find((m) => messageIdOf(m.bytes) === '<dv-5@example.test>')!.bytes;
    assert.match(one, /^Return-Path: <sender@example\.test>\r$/m);
    assert.match(one, /^Delivered-To: carol@shop\.example\r$/m);
    // Dovecot's Received line says it took the message over LMTP from Postern's LHLO name.
    assert.match(one, /^Received: from mx\.example\.test \(\S*\s*\[127\.0\.0\.1\]\)\r\n\s+by dovecot\.interop\.test with LMTP/m);
    assert.match(one, /\r\n\.a line that starts with a dot\r\n/);
    assert.match(one, new RegExp(`\\r\\n${'x'.repeat(900)}\\r\\n`));
  });

  it('relays over lmtp+unix: to the LMTP socket; IMAP shows each exactly once', async () => {
    const messages = Array.from({ length: 5 }, (_, i) => ({ messageId: `<dvu-${i}@example.test>`, to: ['erin@store.example'] }));
    await submit(d!, 'sender@example.test', messages);
    await until("Postern's queue empty", async () => (await spoolCount(d!)) === 0);
    const erin = await dv!.readInbox('erin@store.example');
    assert.deepEqual(sorted(erin.map((m) => messageIdOf(m.bytes))), sorted(messages.map((m) => m.messageId)));
    // Over the unix socket Dovecot has no client address to name.
    assert.match(erin[0]!.bytes, /^Received: from mx\.example\.test\r\n\s+by dovecot\.interop\.test with LMTP/m);
  });

  it('a recipient Dovecot does not know (550 5.1.1) bounces to the local sender; the other gets the message once', async () => {
    await submit(d!, 'sender@example.test', [{ messageId: '<dv-ghost@example.test>', to: ['ghost@shop.example', 'dave@shop.example'] }]);
    await until("Postern's queue empty", async () => (await spoolCount(d!)) === 0);
    await until('the bounce in the sender Maildir', async () => (await readDsns(d!, 'sender')).length >= 1);
    const dsns = await readDsns(d!, 'sender');
    assert.equal(dsns.length, 1);
    const dsn = dsns[0]!;
    assert.equal(dsn.type, 'multipart/report');
    assert.equal(dsn.report_type, 'delivery-status');
    const rcpt = dsn.groups.slice(1);
    assert.equal(rcpt.length, 1, 'only the refused recipient is reported');
    assert.equal(rcpt[0]!['Final-Recipient'], 'rfc822; ghost@shop.example');
    assert.equal(rcpt[0]!.Action, 'failed');
    assert.equal(rcpt[0]!.Status, '5.1.1');
    assert.match(rcpt[0]!['Diagnostic-Code'] ?? '', /^smtp; 550 5\.1\.1 <ghost@shop\.example> User doesn't exist/);
    const dave = await dv!.readInbox('dave@shop.example');
    assert.equal(dave.filter((m) => messageIdOf(m.bytes) === '<dv-ghost@example.test>').length, 1);
  });
});
