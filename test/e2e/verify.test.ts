// Recipient verification for routed domains (`routes.<domain>.verify`), end to end with the real
// daemon: `callout` against a loopback backend (smtp-sink) that refuses unknown users, with the
// answers cached in Redis and shared by two nodes (the test counts backend connections and the
// RCPTs the backend saw); `list` against a store hash; an unreachable next hop (451 4.4.3, or
// accept with on_unreachable: accept); every decision in the transaction trace.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { waitFor } from '../helpers/wait.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:verify:`;
const KNOWN = new Set(['alice@corp.example', 'bob@corp.example']);

/** One transaction's RCPT replies (one connection per call, so each starts cold on our side). */
async function rcpts(port: number, ...to: string[]): Promise<string[]> {
  const s = await openSmtp(port);
  try {
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    const out: string[] = [];
    for (const t of to) {
      s.send(`RCPT TO:<${t}>`);
      out.push((await s.reply()) ?? '(closed)');
    }
    return out;
  } finally {
    s.close();
  }
}

async function closedPort(): Promise<number> {
  const s = await startSink();
  const port = s.port;
  await s.stop();
  return port;
}

describe('verify: callout and list', () => {
  const daemons: RunningDaemon[] = [];
  const sinks: RunningSink[] = [];
  after(async () => {
    for (const d of daemons) {
      await d.stop();
      await removeDir(d.dir);
    }
    for (const s of sinks) await s.stop();
    const r = new Redis(REDIS_URL);
    const keys = await r.keys(`${PREFIX}*`);
    if (keys.length) await r.del(...keys);
    await r.quit();
  });

  it('callout: 550 5.1.1 for an unknown recipient, 250 for a known one, one reused backend connection, cached for the next client and for a second node', { timeout: 90_000 }, async () => {
    const sink = await startSink({ rcpt: (a) => (KNOWN.has(a.toLowerCase()) ? null : { code: 550, message: '5.1.1 <' + a + '>: Recipient address rejected: User unknown' }) });
    sinks.push(sink);
    const dead = await closedPort();
    const config = {
      store: { driver: 'redis', url: REDIS_URL, prefix: PREFIX },
      relay: { networks: [] },
      plugins: [],
      routes: {
        'corp.example': { nexthop: `smtp://127.0.0.1:${sink.port}`, verify: 'callout', callout: { positive_ttl: '1h', negative_ttl: '1h', timeout: '5s' } },
        'down.example': { nexthop: `smtp://127.0.0.1:${dead}`, verify: 'callout', callout: { timeout: '5s' } },
        'lenient.example': { nexthop: `smtp://127.0.0.1:${dead}`, verify: 'callout', callout: { on_unreachable: 'accept' } },
        'plain.example': `smtp://127.0.0.1:${sink.port}`,
      },
    };
    const a = await startDaemon(config);
    daemons.push(a);

    assert.deepEqual(
      (await rcpts(a.ports.smtp!, 'nobody@corp.example', 'alice@corp.example')).map((r) => r.slice(0, 9)),
      ['550 5.1.1', '250 2.1.5'],
    );
    assert.deepEqual(sink.rcptSeen, ['nobody@corp.example', 'alice@corp.example']);
    assert.equal(sink.connections, 1, 'the second probe reused the first connection');

    // Within the TTL: answered from the store, the backend hears nothing.
    assert.deepEqual(
      (await rcpts(a.ports.smtp!, 'nobody@corp.example', 'alice@corp.example')).map((r) => r.slice(0, 9)),
      ['550 5.1.1', '250 2.1.5'],
    );
    assert.equal(sink.rcptSeen.length, 2);

    // A second node on the same Redis shares the cache.
    const b = await startDaemon(config);
    daemons.push(b);
    assert.deepEqual(
      (await rcpts(b.ports.smtp!, 'nobody@corp.example', 'alice@corp.example')).map((r) => r.slice(0, 9)),
      ['550 5.1.1', '250 2.1.5'],
    );
    assert.equal(sink.rcptSeen.length, 2, 'node B asked no backend');
    assert.equal(sink.connections, 1);
    const cached = b.logs.filter((l) => l.evt === 'proxy.verify').map((l) => String(l.detail));
    assert.ok(cached.every((d) => d.startsWith('callout cache:')), cached.join(' | '));

    // bob is new: node B probes for him.
    assert.match((await rcpts(b.ports.smtp!, 'bob@corp.example'))[0]!, /^250/);
    assert.deepEqual(sink.rcptSeen.slice(2), ['bob@corp.example']);

    // Unreachable next hop: 451 4.4.3 by default, accepted with on_unreachable: accept;
    // a route without verify is not probed.
    const r = await rcpts(a.ports.smtp!, 'x@down.example', 'x@lenient.example', 'x@plain.example');
    assert.match(r[0]!, /^451 4\.4\.3 /);
    assert.match(r[1]!, /^250 /);
    assert.match(r[2]!, /^250 /);
    assert.ok(!sink.rcptSeen.includes('x@plain.example'));
  });

  it('every decision is in the transaction trace of the smtp.transaction line', { timeout: 60_000 }, async () => {
    const sink = await startSink({ rcpt: (a) => (KNOWN.has(a.toLowerCase()) ? null : { code: 550, message: 'User unknown' }) });
    sinks.push(sink);
    const d = await startDaemon({ relay: { networks: [] }, plugins: [], routes: { 'corp.example': { nexthop: `smtp://127.0.0.1:${sink.port}`, verify: 'callout' } } });
    daemons.push(d);
    const s = await openSmtp(d.ports.smtp!);
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<nobody@corp.example>', '550 5.1.1');
    await s.cmd('RCPT TO:<alice@corp.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: t\r\n\r\nhi\r\n.', '250');
    s.close();
    const tx = await waitFor(
      () => d.logs.find((l) => l.evt === 'smtp.transaction'),
      (x) => !!x,
    );
    const trace = (tx!.trace as { plugin: string; verdict: string; rcpt?: string }[]).filter((t) => t.plugin === 'verify');
    assert.deepEqual(
      trace.map((t) => [t.rcpt, t.verdict]),
      [
        ['nobody@corp.example', 'reject'],
        ['alice@corp.example', 'next'],
      ],
    );
    // Queue mode: the accepted message still goes through the spool to the same backend.
    await waitFor(
      () => sink.messages.length,
      (n) => n === 1,
    );
  });

  it('list: recipients kept in the store hash verify:list:<domain>, any case', { timeout: 60_000 }, async () => {
    const d = await startDaemon({
      store: { driver: 'redis', url: REDIS_URL, prefix: `${PREFIX}list:` },
      relay: { networks: [] },
      plugins: [],
      routes: { 'shop.example': { nexthop: 'smtp://127.0.0.1:9', verify: 'list' } },
    });
    daemons.push(d);
    const r = new Redis(REDIS_URL);
    await r.hset(`${PREFIX}list:verify:list:shop.example`, 'orders@shop.example', '1');
    await r.quit();
    const out = await rcpts(d.ports.smtp!, 'orders@shop.example', 'Orders@Shop.Example', 'nobody@shop.example');
    assert.match(out[0]!, /^250 /);
    assert.match(out[1]!, /^250 /, 'case does not matter');
    assert.match(out[2]!, /^550 5\.1\.1 /);
    const check = await d.cli(['check-config']);
    assert.equal(check.code, 0);
  });
});
