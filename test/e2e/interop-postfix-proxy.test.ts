// Postern in front of a real Postfix (Debian's), the way issue "proxy mode" asks for it:
//   - verify: callout against Postfix's recipient list (virtual mailboxes, unlisted recipients
//     refused at RCPT): unknown → 550 at our RCPT, known → 250, a second probe within the TTL
//     answered from the cache (Postfix logs no further connection);
//   - mode: proxy: Postfix's 250 and 550 are the client's, nothing waits in our spool;
//   - XCLIENT: our client sits behind a PROXY v1 header (192.0.2.7); Postfix, which trusts us
//     for XCLIENT (smtpd_authorized_xclient_hosts), logs and stamps that address, not ours.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startPostfix, type RunningPostfix } from '../helpers/postfix.js';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { until } from '../helpers/interop.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

describe('interop: Postern in front of Postfix (callout, in-line proxy, XCLIENT)', () => {
  let pf: RunningPostfix | undefined;
  let d: RunningDaemon | undefined;
  before(async () => {
    pf = await startPostfix({
      mailboxes: { 'corp.example': { alice: 'maildir' }, 'inline.example': { bob: 'maildir' } },
      main: { smtpd_authorized_xclient_hosts: '127.0.0.0/8', smtpd_reject_unlisted_recipient: 'yes' },
    });
    d = await startDaemon({
      relay: { networks: [] },
      plugins: [],
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.1'] } } },
      routes: {
        'corp.example': { nexthop: `smtp://127.0.0.1:${pf.port}`, verify: 'callout', callout: { positive_ttl: '1h', negative_ttl: '1h' } },
        'inline.example': { nexthop: `smtp://127.0.0.1:${pf.port}`, mode: 'proxy' },
      },
    });
  });
  after(async () => {
    if (d) {
      await d.stop();
      await removeDir(d.dir);
    }
    await pf?.stop();
  });

  async function client(): Promise<SmtpTranscript> {
    const s = await openSmtp(d!.ports.smtp!);
    s.send(buildProxyHeader(1, { address: '192.0.2.7', port: 40000 }, { address: '127.0.0.1', port: 25 }));
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    return s;
  }

  it('callout: unknown recipient 550 at our RCPT, known 250, the repeat answered from the cache', { timeout: 120_000 }, async () => {
    const s = await client();
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<nobody@corp.example>', '550 5.1.1');
    await s.cmd('RCPT TO:<alice@corp.example>', '250');
    s.close();
    await until('Postfix logged the probe', async () => (await pf!.smtpdConnections()) >= 1);
    const probes = await pf!.smtpdConnections();
    const s2 = await client();
    await s2.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s2.cmd('RCPT TO:<nobody@corp.example>', '550 5.1.1');
    await s2.cmd('RCPT TO:<alice@corp.example>', '250');
    s2.close();
    assert.equal(await pf!.smtpdConnections(), probes, 'no new connection to Postfix within the TTL');
    // The daemon's log lines reach us through its stdout, possibly after the replies.
    const decisions = () => d!.logs.filter((l) => l.evt === 'proxy.verify').map((l) => String(l.detail));
    await until('the four decisions were logged', () => decisions().length >= 4, 10_000);
    const verify = decisions();
    assert.equal(verify.length, 4);
    assert.ok(verify.slice(2).every((x) => x.startsWith('callout cache:')), verify.join(' | '));
  });

  it('in-line proxy: Postfix 250 and 550 reach the client; XCLIENT gives Postfix the original client; nothing spooled', { timeout: 120_000 }, async () => {
    const s = await client();
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<nobody@inline.example>', '550 5.1.1');
    await s.cmd('RCPT TO:<bob@inline.example>', '250');
    await s.cmd('DATA', '354');
    const r = await s.cmd('Subject: through the proxy\r\nMessage-ID: <inline-1@remote.example>\r\n\r\nhello\r\n.', '250 2.0.0 Ok: queued as ');
    s.close();
    assert.match(r, /queued as [0-9A-Z]+/, "Postfix's own queue id");
    const spool = await readdir(join(d!.dataDir, 'spool', 'q')).catch(() => [] as string[]);
    assert.equal(spool.length, 0);
    await until('Postfix delivered to bob', async () => (await pf!.readMailbox('bob@inline.example')).length === 1);
    const [m] = await pf!.readMailbox('bob@inline.example');
    // Postfix's own Received line names the client XCLIENT gave it, with the HELO it gave.
    assert.match(m!.bytes, /Received: from client\.example \(unknown \[192\.0\.2\.7\]\)\r?\n\s+by /);
    const log = await pf!.log();
    assert.match(log, /client=unknown\[192\.0\.2\.7\]/);
    assert.match(log, /NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.7\]: 550 5\.1\.1 <nobody@inline\.example>/);
  });
});
