// End to end with a real rspamd (Debian's, started by test/helpers/rspamd.ts on a loopback port
// with Debian's rules): `postern start` with the rspamd plugin, messages sent with nodemailer.
// GTUBE gets rspamd's "reject" action and is refused at DATA with rspamd's own text; a clean
// message is delivered with the headers rspamd asked for (read back from the Maildir); with
// rspamd stopped the client gets 451 4.3.0 and nothing is stored, and once rspamd is back the
// next message is scanned and delivered. A missing rspamd fails with the install command.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readMaildir } from '../helpers/wait.js';
import { startAliceGateway, type AliceGateway } from '../helpers/alice-gateway.js';
import { GTUBE } from '../helpers/spamd.js';
import { startRspamd, type RunningRspamd } from '../helpers/rspamd.js';

describe('rspamd end to end', () => {
  let rspamd: RunningRspamd;
  let g: AliceGateway;
  const send = (subject: string, text: string) => g.send(subject, { text });
  const delivered = (subject: string) => g.delivered(subject);

  before(async () => {
    rspamd = await startRspamd();
    // No trusted networks: the test client is an outside sender.
    g = await startAliceGateway({ relay: { networks: [] }, plugins: ['relay-acl', { rspamd: { host: '127.0.0.1', port: rspamd.port } }] });
  });
  after(async () => {
    await g?.stop();
    await rspamd?.close();
  });

  it('refuses GTUBE with 550 5.7.1 and rspamd\'s reject text', async () => {
    await assert.rejects(send('gtube', GTUBE), (e: { response?: string }) => {
      assert.equal(e.response, '550 5.7.1 Gtube pattern');
      return true;
    });
  });

  it('delivers a clean message with the headers rspamd added and its score', async () => {
    const info = await send('lunch', 'See you at noon.');
    const queueId = /queued as (\S+)/.exec(info.response)?.[1];
    assert.ok(queueId, info.response);
    const m = await delivered('lunch');
    assert.ok(m);
    // rspamd's verdict ("default: False" = not spam) and the Queue-Id header the plugin sent it.
    assert.match(m, /^X-Spamd-Result: default: False \[-?\d+\.\d\d \/ \d+\.\d\d\]/m);
    assert.match(m, new RegExp(`^X-Rspamd-Queue-Id: ${queueId}$`, 'm'));
    assert.match(m, /^X-Rspamd-Server: \S+$/m);
    assert.match(m, /^X-Spam-Score: -?\d+\.\d\d$/m);
    assert.doesNotMatch(m, /^X-Spam-Flag:/m);
  });

  it('rspamd stopped: 451 4.3.0 and nothing stored; the next message after its restart is delivered', async () => {
    await rspamd.stop();
    try {
      await assert.rejects(send('while-down', 'Hello.'), (e: { response?: string }) => {
        assert.equal(e.response, '451 4.3.0 Policy check unavailable');
        return true;
      });
    } finally {
      await rspamd.start();
    }
    await send('after-restart', 'Hello again.');
    const m = await delivered('after-restart');
    assert.ok(m);
    assert.match(m, /^X-Spamd-Result: default: False/m);
    assert.ok(!(await readMaildir(g.d, 'alice')).some((x) => x.bytes.includes('Subject: while-down')));
  });
});

describe('rspamd missing', () => {
  it('fails with the command that installs it', async () => {
    await assert.rejects(startRspamd({ binary: '/nonexistent/usr/bin/rspamd' }), /rspamd is not installed \(missing \/nonexistent\/usr\/bin\/rspamd\): install it with `apt-get install -y rspamd`/);
  });
});
