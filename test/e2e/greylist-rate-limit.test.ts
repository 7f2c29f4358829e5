// End to end through the SMTP listener: greylist and rate-limit in the chain of a running daemon,
// on its embedded store, spoken to with a raw SMTP transcript. A new triplet hears 451 4.7.1 at
// RCPT, the retry after the delay is accepted and the message delivered; past the per-client
// limit MAIL hears 451 4.7.0. (Both plugins' store behaviour, Redis included, is tested next to
// the plugins with a clock of their own; here the delay is one real second.)
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { readMaildir, waitFor } from '../helpers/wait.js';

describe('greylist and rate-limit end to end', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon({
      relay: { networks: [] },
      plugins: ['relay-acl', { 'rate-limit': { limits: [{ key: 'client_ip', max: 3, window: '1h' }] } }, { greylist: { delay: '1s' } }],
    });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  const attempt = async (rcptReply: string) => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<bob@remote.example>', '250');
    const r = await s.cmd('RCPT TO:<alice@example.test>', rcptReply);
    if (rcptReply === '250') {
      await s.cmd('DATA', '354');
      await s.cmd('From: bob@remote.example\r\nSubject: greylisted once\r\n\r\nHello.\r\n.', '250');
    }
    await s.cmd('QUIT', '221');
    s.close();
    return r;
  };

  it('greylists a new triplet with 451 4.7.1, accepts the retry after the delay, delivers it', async () => {
    // Every MAIL from here on counts for the rate limit's 1h window. Its buckets start on the
    // hour, and just after one the previous bucket's 3 count as 2 (rounded down), so the fourth
    // would pass: start clear of the next hour, which these transactions take far less than.
    const toNextHour = 3_600_000 - (Date.now() % 3_600_000);
    if (toNextHour < 30_000) await new Promise((r) => setTimeout(r, toNextHour + 100));
    assert.equal(await attempt('451'), '451 4.7.1 Greylisted, please try again later');
    assert.equal(await attempt('451'), '451 4.7.1 Greylisted, please try again later', 'too early');
    await new Promise((r) => setTimeout(r, 1100));
    await attempt('250');
    const got = await waitFor(() => readMaildir(d, 'alice'), (m) => m.length > 0);
    assert.match(got[0]?.bytes ?? '', /Subject: greylisted once/);
  });

  it('the fourth transaction from the client within the hour hears 451 4.7.0 at MAIL', async () => {
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    assert.equal(await s.cmd('MAIL FROM:<bob@remote.example>', '451'), '451 4.7.0 Rate limit exceeded (client_ip 127.0.0.1), try again later');
    await s.cmd('QUIT', '221');
    s.close();
  });
});
