// `store.driver: redis` end to end, with the real `postern` daemon:
//   - two gateway processes sharing one Redis (REDIS_URL, a key prefix of this run's own): a user
//     added with node A's CLI is accepted at node B; a relay network written into the store hash
//     `policy:relay:networks` lets a client relay through B on its next connection;
//   - Redis killed during traffic (a private redis-server on a free port): every message that got
//     250 is delivered, the known user is still accepted, changes fail with a clear error; when
//     Redis returns the daemon says so and the directory works again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { readMaildir, waitFor } from '../helpers/wait.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:`;

async function deleteRunKeys(url: string, pattern: string): Promise<void> {
  const r = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    await r.quit();
  }
}

/** One RCPT at `port` from 127.0.0.1; returns the reply. */
async function rcptReply(port: number, rcpt: string): Promise<string> {
  const s = await openSmtp(port);
  try {
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    s.send(`RCPT TO:<${rcpt}>`);
    return (await s.reply()) ?? '(closed)';
  } finally {
    s.close();
  }
}

const logged = (d: RunningDaemon, evt: string) => d.logs.some((l) => l.evt === evt);

describe('redis store: two nodes sharing one Redis', () => {
  const prefix = `${RUN}two:`;
  const daemons: RunningDaemon[] = [];
  after(async () => {
    for (const d of daemons) {
      await d.stop();
      await removeDir(d.dir);
    }
    await deleteRunKeys(REDIS_URL, `${RUN}*`);
  });

  it('a user added at A is accepted at B; a relay network stored at A lets a client relay through B', { timeout: 60_000 }, async () => {
    // No trusted networks: loopback is an ordinary Internet client, so relaying needs the store's list.
    const config = { store: { driver: 'redis', url: REDIS_URL, prefix }, relay: { networks: [] }, plugins: ['relay-acl'] };
    const a = await startDaemon(config);
    daemons.push(a);
    const b = await startDaemon(config);
    daemons.push(b);

    assert.match(await rcptReply(b.ports.smtp!, 'carol@example.test'), /^550 5\.1\.1/, 'unknown before');
    const added = await a.cli(['user', 'add', 'carol@example.test', '--no-password']);
    assert.equal(added.code, 0, added.stderr);
    assert.match(await rcptReply(b.ports.smtp!, 'carol@example.test'), /^250/, 'known at B right after A added it');

    assert.match(await rcptReply(b.ports.smtp!, 'someone@elsewhere.example'), /^554 5\.7\.1/, 'no relaying yet');
    // What `POST /v1/policies/relay/networks` on node A writes: a field in the shared hash.
    const r = new Redis(REDIS_URL);
    await r.hset(`${prefix}policy:relay:networks`, 'n1', '127.0.0.0/8');
    await r.quit();
    assert.match(await rcptReply(b.ports.smtp!, 'someone@elsewhere.example'), /^250/, 'relaying through B on the next connection');
    assert.match(await rcptReply(a.ports.smtp!, 'someone@elsewhere.example'), /^250/, 'and through A');

    const removed = await b.cli(['user', 'del', 'carol@example.test']);
    assert.equal(removed.code, 0, removed.stderr);
    // A cached carol as a positive answer; B's delete event over Redis pub/sub drops it.
    const gone = await waitFor(
      () => rcptReply(a.ports.smtp!, 'carol@example.test'),
      (reply) => reply.startsWith('550'),
    );
    assert.match(gone, /^550 5\.1\.1/, 'a delete at B reaches A');
  });
});

describe('redis store: outage during traffic', () => {
  it('Redis killed mid-traffic: no accepted message lost, known users accepted, recovery when it returns', { timeout: 120_000 }, async () => {
    const redis = await startRedisServer();
    const d = await startDaemon({ store: { driver: 'redis', url: redis.url, prefix: 'outage:', command_timeout: '1s' }, plugins: ['relay-acl'] });
    try {
      const added = await d.cli(['user', 'add', 'alice@example.test', '--no-password']);
      assert.equal(added.code, 0, added.stderr);

      const accepted = new Set<string>();
      const refused: string[] = [];
      let counter = 0;
      let stop = false;
      const client = async (c: number) => {
        while (!stop) {
          // A new connection every few messages, so connect-time policy is read during the outage too.
          const s = await openSmtp(d.ports.smtp!);
          await s.expect('220');
          await s.cmd('EHLO outage.example', '250');
          for (let i = 0; i < 5 && !stop; i++) {
            const id = `outage-${c}-${counter++}`;
            await s.cmd('MAIL FROM:<sender@remote.example>', '250');
            const rcpt = await s.cmd('RCPT TO:<alice@example.test>', '');
            if (!rcpt.startsWith('250')) {
              refused.push(`${id}: RCPT ${rcpt}`);
              await s.cmd('RSET', '250');
              continue;
            }
            await s.cmd('DATA', '354');
            s.send(`Subject: ${id}\r\nMessage-ID: <${id}@remote.example>\r\n\r\n${'x'.repeat(1000)}\r\n.`);
            const reply = (await s.reply()) ?? '(closed)';
            if (reply.startsWith('250')) accepted.add(id);
            else refused.push(`${id}: DATA ${reply}`);
          }
          await s.cmd('QUIT', '221');
          s.close();
        }
      };
      const clients = [client(0), client(1)];
      const before = await waitFor(
        () => accepted.size,
        (n) => n >= 30,
        30_000,
      );
      assert.ok(before >= 30, 'traffic flows before the outage');

      await redis.kill();
      const atKill = accepted.size;
      await waitFor(
        () => logged(d, 'store.unavailable'),
        (v) => v,
      );
      await waitFor(
        () => accepted.size,
        (n) => n >= atKill + 40,
        30_000,
      );
      // A change needs the store: the CLI says why, and nothing is half done.
      const denied = await d.cli(['user', 'add', 'bob@example.test', '--no-password']);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /store unavailable/);
      stop = true;
      await Promise.all(clients);
      assert.ok(accepted.size >= atKill + 40, `mail accepted during the outage (${accepted.size - atKill})`);
      assert.deepEqual(refused, [], 'the known user was accepted throughout');

      // Every 250 is delivered, once.
      const msgs = await waitFor(
        () => readMaildir(d, 'alice'),
        (m) => m.length >= accepted.size,
        60_000,
      );
      const seen = new Map<string, number>();
      for (const m of msgs) {
        const id = /^Subject: (outage-\d+-\d+)$/m.exec(m.bytes)?.[1];
        assert.ok(id, 'every stored message is one of ours');
        seen.set(id, (seen.get(id) ?? 0) + 1);
      }
      for (const id of accepted) assert.equal(seen.get(id), 1, `${id} got 250 and must be delivered exactly once`);

      // Redis returns (empty: it persisted nothing). The daemon reconnects and says so, the
      // directory follows Redis again, and changes work.
      await redis.start();
      await waitFor(
        () => logged(d, 'store.recovered'),
        (v) => v,
        20_000,
      );
      assert.ok(logged(d, 'store.recovered'), 'store.recovered logged');
      const again = await d.cli(['user', 'add', 'dave@example.test', '--no-password']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(await rcptReply(d.ports.smtp!, 'dave@example.test'), /^250/);
      const stale = await waitFor(
        () => rcptReply(d.ports.smtp!, 'alice@example.test'),
        (r) => r.startsWith('550'),
      );
      assert.match(stale, /^550 5\.1\.1/, 'alice is gone from the restarted (empty) Redis, and the daemon follows it');
    } finally {
      await d.stop();
      await removeDir(d.dir);
      await redis.stop();
    }
  });
});
