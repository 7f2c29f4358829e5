// The queue when the disk fails under it, and when an administrator steers an entry during a
// round: a done-mark that could not be written, a removal that failed, a bounce or delete while
// rounds run. The rule in every case is RFC 5321 §6.1's: a message the next hop accepted is
// never sent again, and a deleted or bounced one is not sent at all. Real outbound transport
// and loopback SMTP sinks; the disk faults are injected into the spool's writes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createMessageQueue, type ManagedQueue } from '../../../src/queue/manager.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink, type SinkOptions } from '../../helpers/smtp-sink.js';
import { FakeDirectory } from './fake-directory.js';
import { captureLogger, envelope, message, tempDir, testConfig } from './helpers.js';
import { failFolderSyncs } from './folder-sync-faults.js';
import { until } from '../../helpers/wait.js';

let dns: RunningDnsServer;
before(async () => {
  dns = await startDnsServer({ records: {} });
});
after(async () => {
  await dns.stop();
});

/** One sink per destination domain, all on one port (outbound.mx_port), each on its own address. */
async function sinks(specs: Record<string, SinkOptions>): Promise<{ port: number; by: Record<string, RunningSink>; close(): Promise<void> }> {
  const by: Record<string, RunningSink> = {};
  const records: Record<string, unknown> = {};
  let port = 0;
  let n = 20;
  for (const [domain, opts] of Object.entries(specs)) {
    const host = `127.0.0.${n++}`;
    const sink = await startSink(opts, port, host);
    port = sink.port;
    by[domain] = sink;
    records[domain] = { MX: [{ exchange: `mx.${domain}`, priority: 10 }] };
    records[`mx.${domain}`] = { A: [host] };
  }
  dns.setRecords(records as Parameters<RunningDnsServer["setRecords"]>[0]);
  return { port, by, close: async () => void (await Promise.all(Object.values(by).map((s) => s.stop()))) };
}

async function setup(port: number, extra: { retry?: string[]; concurrency?: number } = {}) {
  const t = await tempDir();
  const config = testConfig(t.dir, { dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: port, tls: 'none', retry: extra.retry ?? ['100ms'] } });
  const directory = new FakeDirectory(['example.test'], ['alice@example.test']);
  const cap = captureLogger();
  const q = createMessageQueue({ config, log: cap.log, directory, ...(extra.concurrency ? { concurrency: extra.concurrency } : {}), outbound: new Outbound({ config, dns: createResolver(config.dns), log: cap.log, client: { connectTimeoutMs: 2000 } }) });
  await q.start();
  return { ...t, ...cap, q };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const spoolFiles = async (dir: string) => readdir(join(dir, 'spool', 'q'));
const count = (lines: Record<string, unknown>[], evt: string) => lines.filter((l) => l.evt === evt).length;

/** The spool's batched removals (src/queue/unlink-batch.ts), to inject a failure into. */
type Removals = { remove(paths: string[], durable: boolean): Promise<void> };
const removalsOf = (q: ManagedQueue) => (q.spool as unknown as { removals: Removals }).removals;

test('a relayed message whose durable removal fails is not sent again (its done-mark stays in memory)', async () => {
  const s0 = await sinks({ 'remote.test': {} });
  const s = await setup(s0.port);
  try {
    const removals = removalsOf(s.q);
    const real = removals.remove.bind(removals);
    let failures = 0;
    removals.remove = (paths, durable) => (failures++ === 0 ? Promise.reject(Object.assign(new Error('EIO: unlink'), { code: 'EIO' })) : real(paths, durable));
    await s.q.accept(s.q.newId(), envelope('alice@example.test', ['x@remote.test']), message('hello\r\n'));
    await until(async () => (await spoolFiles(s.dir)).length === 0 && failures >= 2);
    await s.q.idle();
    assert.equal(s0.by['remote.test']!.messages.length, 1, 'sent once');
    assert.equal(count(s.lines, 'delivery.deferred'), 1);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('a failed done-mark of one destination ends the round only after the other is sent; neither is sent twice', async () => {
  const s0 = await sinks({ 'a.test': {}, 'b.test': { dataDelayMs: 400 } });
  const s = await setup(s0.port);
  try {
    const spool = s.q.spool;
    const real = spool.writeState.bind(spool);
    let writes = 0;
    spool.writeState = (id, state) => (writes++ === 0 ? Promise.reject(Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' })) : real(id, state));
    await s.q.accept(s.q.newId(), envelope('alice@example.test', ['x@a.test', 'y@b.test']), message('hello\r\n'));
    await until(async () => (await spoolFiles(s.dir)).length === 0);
    await s.q.idle();
    assert.ok(writes >= 2, 'the failed done-mark was written again');
    assert.equal(s0.by['a.test']!.messages.length, 1);
    assert.equal(s0.by['b.test']!.messages.length, 1);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('a removal whose folder fsync fails after the unlinks: the entry is dropped at its next round, not retried forever', async () => {
  const s0 = await sinks({ 'remote.test': {} });
  const s = await setup(s0.port);
  try {
    const removals = removalsOf(s.q);
    const real = removals.remove.bind(removals);
    let calls = 0;
    removals.remove = async (paths, durable) => {
      await real(paths, durable);
      if (calls++ === 0) throw Object.assign(new Error('EIO: fsync'), { code: 'EIO' });
    };
    await s.q.accept(s.q.newId(), envelope('alice@example.test', ['x@remote.test']), message('hello\r\n'));
    await until(() => count(s.lines, 'spool.gone') === 1);
    await sleep(400); // four retry periods
    assert.equal(count(s.lines, 'delivery.deferred'), 1);
    assert.equal(s.q.entries().length, 0);
    assert.equal(s0.by['remote.test']!.messages.length, 1);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('a message whose commit cannot be made durable is refused, and sent by neither this queue nor the next start', async () => {
  const s0 = await sinks({ 'remote.test': {} });
  const s = await setup(s0.port);
  const fault = failFolderSyncs(join(s.dir, 'spool', 'q'));
  try {
    await assert.rejects(s.q.accept(s.q.newId(), envelope('alice@example.test', ['x@remote.test']), message('hello\r\n')));
    await sleep(300); // three retry periods
    await s.q.idle();
    fault.heal();
    await s.q.stop();
    await s.q.start(); // what a restart finds in spool/q
    await sleep(300);
    await s.q.idle();
    assert.equal(s0.by['remote.test']!.messages.length, 0, 'the client, told 4xx, sends it again: it must not be here too');
    assert.deepEqual(await spoolFiles(s.dir), []);
  } finally {
    fault.restore();
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('bounce of an entry waiting for its first round: a DSN to the sender, nothing relayed', async () => {
  const s0 = await sinks({ 'one.test': { dataDelayMs: 300 }, 'two.test': {} });
  const s = await setup(s0.port, { concurrency: 1 });
  try {
    await s.q.accept(s.q.newId(), envelope('alice@example.test', ['x@one.test']), message('first\r\n'));
    const id = s.q.newId();
    await s.q.accept(id, envelope('alice@example.test', ['y@two.test']), message('second\r\n'));
    assert.equal(await s.q.bounce(id), true);
    const inbox = join(s.dir, 'mail', 'example.test', 'alice', 'new');
    await until(async () => (await spoolFiles(s.dir)).length === 0 && (await readdir(inbox).catch(() => [])).length === 1);
    await s.q.idle();
    assert.equal(s0.by['one.test']!.messages.length, 1);
    assert.equal(s0.by['two.test']!.messages.length, 0, 'the bounced message was not relayed');
    assert.equal(s0.by['two.test']!.rcptSeen.length, 0);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('delete during a round with another round asked for: the round in progress ends, no other starts, nothing is left', async () => {
  let open = false;
  const later = (a: string) => (open ? null : { code: 451, message: `4.3.0 ${a} later` });
  const s0 = await sinks({ 'a.test': { rcpt: later, dataDelayMs: 300 }, 'b.test': { rcpt: later } });
  const s = await setup(s0.port, { retry: ['1h'] });
  try {
    const id = s.q.newId();
    await s.q.accept(id, envelope('alice@example.test', ['x@a.test', 'y@b.test']), message('hello\r\n'));
    await s.q.idle(); // both deferred for an hour
    open = true;
    await s.q.retry(id, 'a.test'); // a round starts: a.test, slow
    await until(() => s0.by['a.test']!.rcptSeen.length >= 2);
    await s.q.retry(id, 'b.test'); // asks for a round after this one
    assert.equal(await s.q.remove(id), true);
    await sleep(300);
    await s.q.idle();
    assert.equal(s0.by['b.test']!.messages.length, 0, 'nothing sent after the delete');
    assert.deepEqual(await spoolFiles(s.dir), []);
    assert.equal(s.q.entries().length, 0);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

// One SMTP reply covers every copy of a transaction (per-recipient header edits, smtp/copies.ts):
// a copy must not reach anyone when a later copy could not be spooled, or the client's retry
// gives those recipients a second copy.
test('copies of one transaction: a failed commit of the second withdraws the first; nothing is delivered or relayed', async () => {
  const s0 = await sinks({ 'remote.test': {} });
  const s = await setup(s0.port);
  try {
    const spool = s.q.spool;
    const real = spool.accept.bind(spool);
    let commits = 0;
    spool.accept = (id, env, msg) => (++commits === 2 ? Promise.reject(Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' })) : real(id, env, msg));
    const copies = [
      { id: s.q.newId(), envelope: envelope('sender@remote.test', ['alice@example.test']), message: message('copy one\r\n') },
      { id: s.q.newId(), envelope: envelope('sender@remote.test', ['x@remote.test']), message: message('copy two\r\n') },
    ];
    await assert.rejects(s.q.acceptAll(copies), /ENOSPC/);
    await sleep(300);
    await s.q.idle();
    const inbox = join(s.dir, 'mail', 'example.test', 'alice', 'new');
    assert.deepEqual(await readdir(inbox).catch(() => []), [], 'the first copy was not delivered');
    assert.equal(s0.by['remote.test']!.messages.length, 0);
    assert.deepEqual(await spoolFiles(s.dir), [], 'the committed copy was withdrawn');
    assert.equal(s.q.entries().length, 0);
    assert.equal(count(s.lines, 'spool.withdrawn'), 1);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});

test('copies of one transaction, all committed: each is delivered once', async () => {
  const s0 = await sinks({ 'remote.test': {} });
  const s = await setup(s0.port);
  try {
    await s.q.acceptAll([
      { id: s.q.newId(), envelope: envelope('sender@remote.test', ['alice@example.test']), message: message('copy one\r\n') },
      { id: s.q.newId(), envelope: envelope('sender@remote.test', ['x@remote.test']), message: message('copy two\r\n') },
    ]);
    const inbox = join(s.dir, 'mail', 'example.test', 'alice', 'new');
    await until(async () => (await spoolFiles(s.dir)).length === 0 && (await readdir(inbox).catch(() => [])).length === 1);
    await s.q.idle();
    assert.equal(s0.by['remote.test']!.messages.length, 1);
    assert.match(s0.by['remote.test']!.messages[0]!.data.toString(), /copy two/);
  } finally {
    await s.q.stop();
    await s0.close();
    await s.cleanup();
  }
});
