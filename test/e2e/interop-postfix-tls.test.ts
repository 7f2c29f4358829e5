// Postern towards a real Postfix (Debian's) that offers STARTTLS with a self-signed certificate
// the test makes, under `?tls=required`:
//   - in-line proxy (`mode: proxy`): STARTTLS, then XCLIENT, then the transaction; Postfix's
//     Received line says the session used TLS and names the original client;
//   - queued mail (`forward_client: xclient`): the same, from the queue.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startPostfix, type RunningPostfix } from '../helpers/postfix.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { until } from '../helpers/interop.js';
import { testTls } from '../helpers/tls.js';
import { makeServiceDir, removeServiceDir } from '../helpers/system-service.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

describe('interop: Postfix with STARTTLS behind tls=required routes', () => {
  let pf: RunningPostfix | undefined;
  let d: RunningDaemon | undefined;
  let certDir: string | undefined;
  before(async () => {
    const { key, cert } = await testTls();
    certDir = await makeServiceDir('postern-postfix-tls-');
    await writeFile(join(certDir, 'key.pem'), key, { mode: 0o600 });
    await writeFile(join(certDir, 'cert.pem'), cert);
    pf = await startPostfix({
      mailboxes: { 'proxy.example': { alice: 'maildir' }, 'queue.example': { bob: 'maildir' } },
      main: {
        smtpd_authorized_xclient_hosts: '127.0.0.0/8',
        smtpd_tls_security_level: 'may',
        smtpd_tls_cert_file: join(certDir, 'cert.pem'),
        smtpd_tls_key_file: join(certDir, 'key.pem'),
        smtpd_tls_received_header: 'yes',
      },
    });
    d = await startDaemon({
      relay: { networks: [] },
      plugins: [],
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.1'] } } },
      routes: {
        'proxy.example': { nexthop: `smtp://127.0.0.1:${pf.port}?tls=required`, mode: 'proxy' },
        'queue.example': { nexthop: `smtp://127.0.0.1:${pf.port}?tls=required`, forward_client: 'xclient' },
      },
    });
  });
  after(async () => {
    if (d) {
      await d.stop();
      await removeDir(d.dir);
    }
    await pf?.stop();
    if (certDir) await removeServiceDir(certDir);
  });

  async function send(client: string, rcpt: string): Promise<void> {
    const s = await openSmtp(d!.ports.smtp!);
    s.send(buildProxyHeader(1, { address: client, port: 40000 }, { address: '127.0.0.1', port: 25 }));
    await s.expect('220');
    await s.cmd('EHLO tls.client.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd(`RCPT TO:<${rcpt}>`, '250');
    await s.cmd('DATA', '354');
    await s.cmd(`Subject: to ${rcpt}\r\n\r\nhello\r\n.`, '250');
    await s.cmd('QUIT', '221');
    s.close();
  }

  /** Postfix's own Received field (the first one), unfolded. */
  const postfixReceived = (bytes: string) => bytes.split(/\r?\n(?=\S)/).find((l) => l.startsWith('Received:'))!.replace(/\r?\n\s+/g, ' ');

  for (const [what, client, rcpt] of [
    ['in-line proxy', '192.0.2.31', 'alice@proxy.example'],
    ['queued mail', '192.0.2.32', 'bob@queue.example'],
  ] as const) {
    it(`${what}: STARTTLS, then XCLIENT; Postfix stamps TLS and the original client`, { timeout: 120_000 }, async () => {
      await send(client, rcpt);
      await until('delivered', async () => (await pf!.readMailbox(rcpt)).length === 1);
      const [m] = await pf!.readMailbox(rcpt);
      const received = postfixReceived(m!.bytes);
      assert.match(received, new RegExp(`^Received: from tls\\.client\\.example \\(unknown \\[${client.replace(/\./g, '\\.')}\\]\\) \\(using TLSv1\\.[23] with cipher `));
    });
  }
});
