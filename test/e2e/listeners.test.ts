// `postern start` with listeners the config names but this build does not serve (IMAP, POP3):
// each is reported at start with its key and port, and nothing listens on it.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';


const refused = (port: number) =>
  new Promise<boolean>((res) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => (s.destroy(), res(false)));
    s.on('error', () => res(true));
  });

describe('listeners this build does not serve', () => {
  let d: RunningDaemon;
  let imap: number;
  let pop3s: number;
  before(async () => {
    [imap, pop3s] = [await freePort(), await freePort()];
    const listen = Object.fromEntries(['smtp', 'lmtp'].map((n) => [n, { host: '127.0.0.1', port: 0 }]));
    d = await startDaemon({ listen: { ...listen, imap: { host: '127.0.0.1', port: imap }, pop3s: { host: '127.0.0.1', port: pop3s } } });
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('each configured one is logged as a warning with its key and port, and its port stays closed', async () => {
    const lines = d.logs.filter((l) => l.evt === 'daemon.listener_unavailable');
    assert.deepEqual(
      lines.map((l) => [l.listener, l.port, l.level]),
      [
        ['imap', imap, 40],
        ['pop3s', pop3s, 40],
      ],
    );
    assert.match(String(lines[0]!.msg), /^listen\.imap: not served by this build/);
    assert.equal(await refused(imap), true);
    assert.equal(await refused(pop3s), true);
    assert.deepEqual(Object.keys(d.ports).sort(), ['lmtp', 'smtp']);
  });
});
