// ETRN (RFC 1985) on the smtp listener of a running daemon: mail waits for a next hop that is
// down with an hour until its next retry; the next hop comes up; ETRN from a trusted client
// delivers it at once, `ETRN @domain` takes subdomains too; untrusted clients are refused, and
// every bad use has its reply. The submission listener neither offers nor knows ETRN.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { waitFor as poll } from '../helpers/wait.js';

/** Waits until `ok` holds; fails the test when it never does. */
async function waitFor(ok: () => boolean | Promise<boolean>): Promise<void> {
  assert.ok(await poll(ok, (v) => v, 15_000), 'condition not met in time');
}

describe('ETRN', () => {
  let dns: RunningDnsServer;
  let sink: RunningSink;
  let d: RunningDaemon;

  before(async () => {
    dns = await startDnsServer({ records: {} });
    sink = await startSink({}, 0, '127.0.0.31');
    dns.setRecords({
      'far.test': { MX: [{ exchange: 'mx.far.test', priority: 10 }] },
      'a.sub.test': { MX: [{ exchange: 'mx.far.test', priority: 10 }] },
      'mx.far.test': { A: ['127.0.0.31'] },
    });
    d = await startDaemon({
      dns: { servers: [dns.server], timeout: '1s', tries: 1 },
      // Only 127.0.0.1 is trusted: a client bound to 127.0.0.2 is a stranger.
      relay: { networks: ['127.0.0.1/32'] },
      outbound: { mx_port: sink.port, tls: 'none', retry: ['1h'] },
    });
  });
  after(async () => {
    await d?.stop();
    await sink?.stop();
    await dns?.stop();
    if (d) await removeDir(d.dir);
  });

  it('runs the queue for a domain at once for a trusted client, refuses strangers', async () => {
    await sink.down();
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true });
    await t.sendMail({ envelope: { from: 'alice@example.test', to: ['bob@far.test'] }, raw: 'Subject: one\r\n\r\nfor far.test\r\n' });
    await t.sendMail({ envelope: { from: 'alice@example.test', to: ['carol@a.sub.test'] }, raw: 'Subject: two\r\n\r\nfor a.sub.test\r\n' });
    t.close();
    await waitFor(async () => ((await d.cli(['queue', 'list'])).stdout.match(/deferred/g) ?? []).length === 2);
    await sink.up();

    // A stranger sees ETRN offered (as on any MX) but may not use it.
    const s1 = await openSmtp(d.ports.smtp!, { localAddress: '127.0.0.2' });
    await s1.expect('220 ');
    const ehlo = await s1.cmd('EHLO client.test', '250');
    assert.match(ehlo, /^250[- ]ETRN$/m);
    await s1.cmd('ETRN far.test', '554 5.7.1 ');
    await s1.cmd('QUIT', '221');
    s1.close();

    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220 ');
    await s.cmd('ETRN far.test', '503 5.5.1 ');
    await s.cmd('EHLO client.test', '250');
    await s.cmd('ETRN', '500 5.5.2 ');
    await s.cmd('ETRN bad..domain', '501 5.5.4 ');
    await s.cmd('ETRN far.test extra', '501 5.5.4 ');
    await s.cmd('ETRN #queue1', '459 4.7.1 Node #queue1 not allowed');
    await s.cmd('ETRN example.test', '459 4.7.1 Node example.test not allowed');
    await s.cmd('ETRN nothing.test', '251 2.0.0 No messages waiting for node nothing.test');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('ETRN far.test', '503 5.5.1 ');
    await s.cmd('RSET', '250');
    assert.equal(sink.messages.length, 0, 'nothing went out before ETRN (the next retry is an hour away)');

    await s.cmd('ETRN far.test', '250 2.0.0 Queuing for node far.test started (1 message)');
    await waitFor(() => sink.messages.length === 1);
    assert.deepEqual(sink.messages[0]!.to, ['bob@far.test']);
    // The other domain is untouched by `ETRN far.test`; `@sub.test` covers a.sub.test.
    const list = await d.cli(['queue', 'list']);
    assert.match(list.stdout, /carol@a\.sub\.test/);
    assert.doesNotMatch(list.stdout, /bob@far\.test/);
    await s.cmd('ETRN sub.test', '251 2.0.0 ');
    await s.cmd('ETRN @sub.test', '250 2.0.0 Queuing for node @sub.test started (1 message)');
    await waitFor(() => sink.messages.length === 2);
    assert.deepEqual(sink.messages[1]!.to, ['carol@a.sub.test']);
    await s.cmd('QUIT', '221');
    s.close();
    await waitFor(async () => !/@/.test((await d.cli(['queue', 'list'])).stdout));
    assert.equal(sink.messages.length, 2, 'each message delivered once');
  });

  it('the submission listener neither offers nor accepts ETRN', async () => {
    const s = await openSmtp(d.ports.submission!);
    await s.expect('220 ');
    const ehlo = await s.cmd('EHLO client.test', '250');
    assert.doesNotMatch(ehlo, /ETRN/);
    await s.cmd('ETRN far.test', '500 5.5.2 ');
    s.close();
  });
});
