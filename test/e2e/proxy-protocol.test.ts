// PROXY protocol end to end with the real daemon and the real plugins: behind a "load balancer"
// (loopback 127.0.0.2, listed in listen.smtp.proxy_protocol.trusted) the address in the v1/v2
// header is what relay-acl (relay.networks) and dnsbl see. The balancer's own address may not
// relay; a client that talks to the listener directly with a header is refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { waitFor } from '../helpers/wait.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

const header = (v: 1 | 2, client: string) => buildProxyHeader(v, { address: client, port: 40000 }, { address: '198.51.100.25', port: 25 });

async function rcptVia(port: number, from: string, hdr: Buffer | null, rcpt: string): Promise<string> {
  const s = await openSmtp(port, { localAddress: from });
  try {
    if (hdr) s.send(hdr);
    const g = (await s.reply()) ?? '(closed)';
    if (!g.startsWith('220')) return g;
    s.send('EHLO client.example');
    const e = (await s.reply()) ?? '(closed)';
    if (!e.startsWith('250')) return e;
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    s.send(`RCPT TO:<${rcpt}>`);
    return (await s.reply()) ?? '(closed)';
  } finally {
    s.close();
  }
}

describe('PROXY protocol with relay-acl and dnsbl', () => {
  let d: RunningDaemon;
  let dns: Awaited<ReturnType<typeof startDnsServer>>;
  before(async () => {
    dns = await startDnsServer({ records: { '66.100.51.198.bl.test': { A: ['127.0.0.2'], TXT: ['listed for testing'] } } });
    d = await startDaemon({
      relay: { networks: ['192.0.2.0/25'] },
      dns: { servers: [`127.0.0.1:${dns.port}`] },
      plugins: ['relay-acl', { dnsbl: { zones: ['bl.test'] } }],
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.2'] } } },
    });
  });
  after(async () => {
    await d?.stop();
    await dns?.stop();
    if (d) await removeDir(d.dir);
  });

  for (const v of [1, 2] as const) {
    it(`v${v}: a trusted network behind the balancer relays; an outside client does not; a listed one is refused by dnsbl`, async () => {
      assert.match(await rcptVia(d.ports.smtp!, '127.0.0.2', header(v, '192.0.2.7'), 'x@foreign.example'), /^250 /);
      assert.match(await rcptVia(d.ports.smtp!, '127.0.0.2', header(v, '192.0.2.200'), 'x@foreign.example'), /^554 5\.7\.1 /);
      assert.match(await rcptVia(d.ports.smtp!, '127.0.0.2', header(v, '198.51.100.66'), 'x@foreign.example'), /^554 5\.7\.1 .*bl\.test/);
    });
  }

  it('the balancer itself may not relay, and a header from another peer is refused', async () => {
    const local = Buffer.concat([header(2, '192.0.2.7').subarray(0, 12), Buffer.from([0x20, 0x00, 0, 0])]);
    assert.match(await rcptVia(d.ports.smtp!, '127.0.0.2', local, 'x@foreign.example'), /^554 5\.7\.1 /);
    assert.match(await rcptVia(d.ports.smtp!, '127.0.0.3', header(1, '192.0.2.7'), 'x@foreign.example'), /^554 5\.7\.1 PROXY protocol header not accepted/);
    // The log line may reach us a moment after the reply does.
    const logged = await waitFor(
      () => d.logs.filter((l) => l.evt === 'smtp.proxy_protocol.rejected' || l.evt === 'smtp.early_talker'),
      (l) => l.length >= 1,
    );
    assert.ok(logged.length >= 1, 'the refusal is logged');
  });
});
