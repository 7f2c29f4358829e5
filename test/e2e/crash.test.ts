// Crash safety: SIGKILL the daemon while clients send; after a restart every message that got
// 250 is in its mailbox exactly once, and none that did not is. A message whose final dot was
// sent when the connection died without a reply is "in doubt" (RFC 1047's unavoidable window
// between our commit and the client reading 250); it may be present, once at most. There is at
// most one such message per connection.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startDaemon, removeDir } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { pythonJson, READ_MAILDIR } from '../helpers/python.js';

const CONNECTIONS = 4;

describe('crash safety', () => {
  it('SIGKILL mid-stream loses no acknowledged message and duplicates none', { timeout: 120_000 }, async () => {
    const config = { plugins: ['relay-acl'] };
    let d = await startDaemon(config);
    const dir = d.dir;
    try {
      const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
      assert.equal(r.code, 0, r.stderr);

      const accepted = new Set<string>();
      const inDoubt = new Set<string>();
      const refused = new Set<string>();
      let counter = 0;
      let stop = false;
      const client = async (c: number) => {
        const s = await openSmtp(d.ports.smtp!);
        await s.expect('220');
        await s.cmd('EHLO crash.example', '250');
        while (!stop) {
          const id = `crash-${c}-${counter++}`;
          let dotSent = false;
          try {
            await s.cmd('MAIL FROM:<sender@remote.example>', '250');
            await s.cmd('RCPT TO:<alice@example.test>', '250');
            await s.cmd('DATA', '354');
            s.send(`Subject: ${id}\r\nMessage-ID: <${id}@remote.example>\r\n\r\n${'x'.repeat(2000)}\r\n.`);
            dotSent = true;
            const reply = await s.reply();
            if (reply === null) {
              inDoubt.add(id);
              return;
            }
            if (reply.startsWith('250')) accepted.add(id);
            else refused.add(id);
          } catch {
            if (dotSent) inDoubt.add(id);
            return;
          }
        }
        s.close();
      };
      const clients = Array.from({ length: CONNECTIONS }, (_, c) => client(c));
      // Let some mail through, then pull the plug.
      while (accepted.size < 150) await new Promise((res) => setTimeout(res, 10));
      await d.kill();
      stop = true;
      await Promise.all(clients);
      assert.ok(inDoubt.size <= CONNECTIONS);

      d = await startDaemon(config, { dir });
      const path = join(d.dataDir, 'mail', 'example.test', 'alice');
      const read = () => pythonJson<{ bytes: string }[]>(READ_MAILDIR, [path, '']);
      // Recovery delivers what was spooled; wait until the count stops growing.
      let msgs = await read();
      for (let stable = 0, last = -1; stable < 10; ) {
        await new Promise((res) => setTimeout(res, 100));
        msgs = await read();
        stable = msgs.length === last ? stable + 1 : 0;
        last = msgs.length;
      }
      const seen = new Map<string, number>();
      for (const m of msgs) {
        const id = /^Subject: (crash-\d+-\d+)$/m.exec(m.bytes)?.[1];
        assert.ok(id, 'every stored message is one of ours');
        seen.set(id, (seen.get(id) ?? 0) + 1);
      }
      for (const id of accepted) assert.equal(seen.get(id), 1, `${id} got 250 and must be stored exactly once`);
      for (const [id, n] of seen) {
        assert.equal(n, 1, `${id} stored ${n} times`);
        assert.ok(accepted.has(id) || inDoubt.has(id), `${id} never got 250 but was stored`);
      }
      assert.equal(refused.size, 0, 'nothing was refused before the crash');
    } finally {
      await d.stop();
      await removeDir(dir);
    }
  });
});
