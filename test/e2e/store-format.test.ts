// A running daemon whose embedded store is then written in a newer format (a newer `postern`
// CLI, after an upgrade the daemon has not been restarted for): it stops using the store rather
// than skip what it cannot read. Mail gets a temporary failure (the sender retries), /readyz
// says why, nothing is written to the store, and mail accepted before is delivered once.
import assert from 'node:assert/strict';
import { appendFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { storeFiles } from '../helpers/store-files.js';
import { readMaildir, waitFor } from '../helpers/wait.js';

// The default chain refuses at MAIL (relay-acl cannot read its sender access list); without
// plugins the SMTP core's recipient lookup is what fails.
const chains: [string, Record<string, unknown>, number, RegExp][] = [
  ['the default chain', {}, 3, /^451 4\.3\.0 Relay policy unavailable, try again later$/],
  ['no plugins', { plugins: [] }, 4, /^451 4\.3\.0 Temporary lookup failure, try again later$/],
];

for (const [chain, config, repliesUpToRefusal, refusal] of chains) describe(`a running daemon meets a store in a newer format (${chain})`, () => {
  let d: RunningDaemon;
  const stateDir = () => join(d.dataDir, 'state');
  const stateFiles = () => storeFiles(d.dataDir);

  before(async () => {
    d = await startDaemon({ listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } }, ...config });
    const added = await d.cli(['user', 'add', 'bob@example.test', '--no-password']);
    assert.equal(added.code, 0, added.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  /** One transaction from 127.0.0.1: every reply, up to the first that is not 2xx or 3xx. */
  const send = async (subject: string) => {
    const s = await openSmtp(d.ports.smtp!);
    const replies: string[] = [];
    try {
      replies.push((await s.reply())!);
      for (const line of ['EHLO client.example', 'MAIL FROM:<a@sender.example>', 'RCPT TO:<bob@example.test>', 'DATA', `Subject: ${subject}\r\n\r\nhello\r\n.`]) {
        if (!/^[23]/.test(replies.at(-1)!)) break;
        s.send(line);
        replies.push((await s.reply())!);
      }
    } finally {
      s.close();
    }
    return replies;
  };

  it('answers 451 4.3.0, reports itself not ready, writes nothing, and keeps what it accepted before', async () => {
    assert.match((await send('before')).at(-1)!, /^250 /);
    await waitFor(() => readMaildir(d, 'bob'), (m) => m.length === 1);

    const journal = readdirSync(stateDir()).find((f) => f.startsWith('store.journal.'))!;
    appendFileSync(join(stateDir(), journal), '{"o":"format","v":2}\n');
    const before = stateFiles();

    const ready = await waitFor(
      () => fetch(`http://127.0.0.1:${d.ports.api}/readyz`).then(async (r) => ({ status: r.status, body: (await r.json()) as { detail?: string } })),
      (r) => r.status === 503,
    );
    assert.equal(ready.status, 503);
    assert.match(ready.body.detail ?? '', /is in store format 2, written by a newer Postern; this build reads format 1/);

    const refused = await send('after');
    assert.equal(refused.length, repliesUpToRefusal, refused.join(' | '));
    assert.match(refused.at(-1)!, refusal);

    assert.deepEqual(stateFiles(), before);
    const bob = await readMaildir(d, 'bob');
    assert.deepEqual(
      bob.map((m) => /^Subject: (.*)$/m.exec(m.bytes)?.[1]),
      ['before'],
    );
    assert.equal(d.logs.filter((l) => l.evt === 'store.format_newer').length, 1);
    assert.equal(await d.stop(), 0, d.stderr());
  });
});
