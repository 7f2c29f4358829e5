// Queued mail relayed to a real Postfix (Debian's) with the original client forwarded, per route
// (`routes.<d>.forward_client`):
//   - xclient: clients behind PROXY v1 headers (192.0.2.7 twice, then 192.0.2.8) send one message
//     each; all are spooled and relayed, Postfix's Received line and log name each message's own
//     client, not us; the same client's two messages share one connection, the other client's
//     gets its own (Postfix offers no second XCLIENT on a connection);
//   - xforward: Postfix logs the forwarded client (orig_client=) and our queue id (orig_queue_id=);
//   - a route without forward_client: Postfix sees us (127.0.0.1).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startPostfix, type RunningPostfix } from '../helpers/postfix.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { spoolCount, until } from '../helpers/interop.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

describe('interop: queued mail to Postfix with XCLIENT / XFORWARD', () => {
  let pf: RunningPostfix | undefined;
  let d: RunningDaemon | undefined;
  before(async () => {
    pf = await startPostfix({
      mailboxes: { 'xc.example': { alice: 'maildir' }, 'xf.example': { bob: 'maildir' }, 'plain.example': { carol: 'maildir' } },
      main: { smtpd_authorized_xclient_hosts: '127.0.0.0/8', smtpd_authorized_xforward_hosts: '127.0.0.0/8' },
    });
    d = await startDaemon({
      relay: { networks: [] },
      plugins: [],
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.1'] } } },
      outbound: { tls: 'none', reuse: { idle_timeout: '1h' } },
      routes: {
        'xc.example': { nexthop: `smtp://127.0.0.1:${pf.port}`, forward_client: 'xclient' },
        'xf.example': { nexthop: `smtp://127.0.0.1:${pf.port}`, forward_client: 'xforward' },
        'plain.example': `smtp://127.0.0.1:${pf.port}`,
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

  /** One message from `client` (given in a PROXY v1 header) with the HELO name `helo`. */
  async function send(client: string, helo: string, rcpt: string, id: string): Promise<void> {
    const s = await openSmtp(d!.ports.smtp!);
    s.send(buildProxyHeader(1, { address: client, port: 40000 }, { address: '127.0.0.1', port: 25 }));
    await s.expect('220');
    await s.cmd(`EHLO ${helo}`, '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd(`RCPT TO:<${rcpt}>`, '250');
    await s.cmd('DATA', '354');
    await s.cmd(`Subject: ${id}\r\nMessage-ID: <${id}@remote.example>\r\n\r\nhello\r\n.`, '250');
    await s.cmd('QUIT', '221');
    s.close();
  }

  const receivedOf = (bytes: string) => bytes.split(/\r?\n(?=\S)/).filter((l) => l.startsWith('Received:'));

  it('xclient: each queued message reaches Postfix as its own client; one connection per client', { timeout: 120_000 }, async () => {
    const before = await pf!.smtpdConnections();
    await send('192.0.2.7', 'first.client.example', 'alice@xc.example', 'xc-1');
    await until('the first message was delivered', async () => (await pf!.readMailbox('alice@xc.example')).length === 1);
    await send('192.0.2.7', 'first.client.example', 'alice@xc.example', 'xc-2');
    await until('the second message was delivered', async () => (await pf!.readMailbox('alice@xc.example')).length === 2);
    assert.equal((await pf!.smtpdConnections()) - before, 1, 'the same client: the connection is reused (RSET, XCLIENT still in effect)');
    // Postfix does not offer XCLIENT again once it is in effect, so another client needs its own connection.
    await send('192.0.2.8', 'second.client.example', 'alice@xc.example', 'xc-3');
    await until('the third message was delivered', async () => (await pf!.readMailbox('alice@xc.example')).length === 3);
    assert.equal((await pf!.smtpdConnections()) - before, 2, 'another client: a new connection');
    assert.equal(await spoolCount(d!), 0);
    const box = await pf!.readMailbox('alice@xc.example');
    const byId = (id: string) => box.find((m) => m.bytes.includes(`<${id}@remote.example>`))!.bytes;
    // Postfix's own Received line (the first) names the client XCLIENT gave it, with its HELO.
    for (const id of ['xc-1', 'xc-2']) assert.match(receivedOf(byId(id))[0]!, /^Received: from first\.client\.example \(unknown \[192\.0\.2\.7\]\)\r?\n\s+by postfix\.interop\.test/, id);
    assert.match(receivedOf(byId('xc-3'))[0]!, /^Received: from second\.client\.example \(unknown \[192\.0\.2\.8\]\)\r?\n\s+by postfix\.interop\.test/);
    const log = await pf!.log();
    assert.equal((log.match(/client=unknown\[192\.0\.2\.7\]/g) ?? []).length, 2);
    assert.match(log, /client=unknown\[192\.0\.2\.8\]/);
  });

  it('xforward: Postfix logs the forwarded client as orig_client (its Received line stays ours)', { timeout: 120_000 }, async () => {
    await send('192.0.2.9', 'third.client.example', 'bob@xf.example', 'xf-1');
    await until('delivered', async () => (await pf!.readMailbox('bob@xf.example')).length === 1);
    // IDENT is our queue id, logged as orig_queue_id.
    await until('Postfix logged the forwarded client', async () => /client=localhost\[127\.0\.0\.1\], orig_queue_id=[0-9A-Z]+, orig_client=unknown\[192\.0\.2\.9\]/.test(await pf!.log()));
  });

  it('without forward_client Postfix sees Postern itself', { timeout: 120_000 }, async () => {
    await send('192.0.2.10', 'fourth.client.example', 'carol@plain.example', 'plain-1');
    await until('delivered', async () => (await pf!.readMailbox('carol@plain.example')).length === 1);
    const [m] = await pf!.readMailbox('carol@plain.example');
    const first = receivedOf(m!.bytes)[0]!;
    assert.match(first, /\[127\.0\.0\.1\]/);
    assert.doesNotMatch(first, /192\.0\.2\.10/);
  });
});
