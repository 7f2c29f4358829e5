// DNSBL against a loopback DNS server that lists 127.0.0.2: a client connecting from 127.0.0.2
// is refused, one from 127.0.0.1 is not.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { openSmtp } from '../helpers/smtp-client.js';

describe('dnsbl', () => {
  let d: RunningDaemon;
  let dns: Awaited<ReturnType<typeof startDnsServer>>;
  before(async () => {
    dns = await startDnsServer({ records: { '2.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['listed for testing'] } } });
    d = await startDaemon({
      relay: { networks: [] },
      dns: { servers: [`127.0.0.1:${dns.port}`] },
      plugins: ['relay-acl', { dnsbl: { zones: ['bl.test'] } }],
    });
  });
  after(async () => {
    await d?.stop();
    await dns?.stop();
    if (d) await removeDir(d.dir);
  });

  it('refuses a listed client with 554 5.7.1 naming the zone', async () => {
    const s = await openSmtp(d.ports.smtp!, { localAddress: '127.0.0.2' });
    const r = await s.reply();
    // Refused at connect, either instead of the greeting or at the first command.
    if (r?.startsWith('220')) {
      s.send('EHLO listed.example');
      const e = await s.reply();
      assert.match(e ?? '', /^554 5\.7\.1 .*bl\.test/);
    } else {
      assert.match(r ?? '', /^554 5\.7\.1 .*bl\.test/);
    }
    s.close();
  });

  it('lets an unlisted client through', async () => {
    const s = await openSmtp(d.ports.smtp!, { localAddress: '127.0.0.1' });
    await s.expect('220');
    await s.cmd('EHLO clean.example', '250');
    s.close();
  });
});
