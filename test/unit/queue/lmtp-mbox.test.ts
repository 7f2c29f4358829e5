// LMTP deliveries straight into mbox (QueueManager.deliverNow): no spool entry backs them, so a
// standalone intent record does (delivery/mbox-intent.ts). A crash in the middle of an append is
// set up as it leaves the disk: the record of the delivery, the entry torn at the end of the
// mbox, the record never removed. The mailboxes are read back with Python's mailbox module.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createMessageQueue } from '../../../src/queue/manager.js';
import { Spool } from '../../../src/queue/spool.js';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { newQueueId } from '../../../src/queue/queue-id.js';
import { LocalDelivery } from '../../../src/delivery/local.js';
import type { MboxOptions } from '../../../src/delivery/mbox.js';
import type { Config } from '../../../src/config/load.js';
import type { Envelope } from '../../../src/queue/envelope.js';
import { FakeDirectory } from './fake-directory.js';
import { captureLogger, envelope, message, tempDir, testConfig } from './helpers.js';
import { readWithPython } from '../delivery/python.js';
import { MemoryStore } from '../../../src/store/memory.js';

const USERS = ['alice@example.test', 'bob@example.test'];
const MBOX = { mailbox: { format: 'mbox', path: '{data_dir}/mbox/{user}' } };

async function setup() {
  const t = await tempDir();
  const config = testConfig(t.dir, MBOX);
  const cap = captureLogger();
  const make = (mbox?: MboxOptions) => createMessageQueue({ config, log: cap.log, directory: new FakeDirectory(['example.test'], [...USERS]), ...(mbox ? { mbox } : {}) });
  return { ...t, config, ...cap, make, inbox: (user: string) => join(t.dir, 'mbox', user) };
}

const evts = (lines: Record<string, unknown>[], evt: string) => lines.filter((l) => l.evt === evt);
const spoolFiles = async (dataDir: string) => (await readdir(join(dataDir, 'spool', 'q'))).sort();
/** The bodies of an mbox as Python reads them. */
const bodies = (path: string) => readWithPython('mbox', path).map((m) => m.bytes.toString().split('\n\n').slice(1).join('\n\n'));

/**
 * An LMTP delivery into alice's (or `user`'s) mbox as deliverNow makes one (its standalone intent record
 * written before the append), by a process that dies right after the append: the removal of
 * the record is lost.
 */
async function deliverThenDie(config: Config, spool: Spool, id: string, env: Envelope, msg: Buffer, user = 'alice@example.test'): Promise<void> {
  await new LocalDelivery(config, new DirSyncer()).deliver({
    qid: id,
    sender: env.mailFrom,
    receivedAt: env.receivedAt,
    user,
    message: msg,
    checkExisting: false,
    intents: { get: (k) => spool.readIntent(id, k), put: (k, v) => spool.writeIntent(id, k, v), standalone: true },
  });
}

/** A first message in alice's mbox, delivered over LMTP by a queue that then stops. */
async function firstOverLmtp(s: Awaited<ReturnType<typeof setup>>): Promise<void> {
  const q = s.make();
  await q.start();
  const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message('first\r\n'));
  assert.deepEqual(out.map((o) => o.status), ['delivered']);
  await q.stop();
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((r) => c.on('exit', r));
  return c.pid!;
}

const SECOND = `Subject: second\r\n\r\n${'a line of the second message\r\n'.repeat(100)}`;
const secondBody = `${'a line of the second message\n'.repeat(100)}`;

test('LMTP into mbox: an append torn by a crash is cut off at the next start, before any other delivery', async () => {
  const s = await setup();
  try {
    await firstOverLmtp(s);
    const path = s.inbox('alice@example.test');
    const spool = new Spool(s.dir);
    await spool.init();
    // A spooled message waits for the same mailbox: it must not be appended after torn bytes.
    await spool.accept(newQueueId(), envelope('a@example.net', ['alice@example.test']), message('waiting\r\n'));
    const env = envelope('b@example.net', ['alice@example.test']);
    const size = (await stat(path)).size;
    await deliverThenDie(s.config, spool, newQueueId(), env, Buffer.from(SECOND));
    await truncate(path, size + 1500); // the crash tore the append 1500 bytes in
    await writeFile(`${path}.lock`, `${await deadPid()}\n`); // and left its dotlock
    await spool.close();

    const q2 = s.make();
    await q2.start();
    await q2.idle();
    assert.deepEqual(bodies(path), ['first\n', 'waiting\n']);
    assert.deepEqual(evts(s.lines, 'delivery.mbox_torn_repaired').map((l) => [l.file, l.offset]), [[path, size]]);
    // The LMTP client never got a reply: it sends the message again.
    const again = await q2.deliverNow(q2.newId(), env, Buffer.from(SECOND));
    assert.deepEqual(again.map((o) => o.status), ['delivered']);
    assert.deepEqual(bodies(path), ['first\n', 'waiting\n', secondBody]);
    assert.deepEqual(await spoolFiles(s.dir), []);
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

test('LMTP into mbox: a leftover record of a complete entry leaves the mailbox alone', async () => {
  const s = await setup();
  try {
    const spool = new Spool(s.dir);
    await spool.init();
    await deliverThenDie(s.config, spool, newQueueId(), envelope('a@example.net', ['alice@example.test']), message('first\r\n'));
    await deliverThenDie(s.config, spool, newQueueId(), envelope('b@example.net', ['alice@example.test']), Buffer.from(SECOND));
    await spool.close();
    const path = s.inbox('alice@example.test');
    const bytes = await readFile(path);
    assert.equal((await spoolFiles(s.dir)).length, 2, 'both records are left');

    const q = s.make();
    await q.start();
    assert.deepEqual(await readFile(path), bytes);
    assert.deepEqual(bodies(path), ['first\n', secondBody]);
    assert.deepEqual(evts(s.lines, 'delivery.mbox_intent_dropped').map((l) => l.outcome), ['complete', 'complete']);
    assert.deepEqual(await spoolFiles(s.dir), []);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('LMTP into mbox: a torn entry in a mailbox rewritten since is left alone', async () => {
  const s = await setup();
  try {
    await firstOverLmtp(s);
    const spool = new Spool(s.dir);
    await spool.init();
    const path = s.inbox('alice@example.test');
    const size = (await stat(path)).size;
    await deliverThenDie(s.config, spool, newQueueId(), envelope('b@example.net', ['alice@example.test']), Buffer.from(SECOND));
    await truncate(path, size + 1500);
    await spool.close();
    // A mail reader marked the first message read and wrote the mailbox back: the torn entry
    // is now further on, and the bytes at the recorded offset are not its start.
    const rewritten = (await readFile(path, 'latin1')).replace('Subject: test\n', 'Subject: test\nStatus: RO\n');
    await writeFile(path, rewritten, 'latin1');

    const q = s.make();
    await q.start();
    assert.equal(await readFile(path, 'latin1'), rewritten);
    assert.deepEqual(evts(s.lines, 'delivery.mbox_intent_dropped').map((l) => l.outcome), ['changed']);
    assert.deepEqual(evts(s.lines, 'delivery.mbox_torn_repaired'), []);
    assert.deepEqual(await spoolFiles(s.dir), []);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('LMTP into mbox: a record whose mailbox stays locked is kept, and checked at the next start', async () => {
  const s = await setup();
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    await firstOverLmtp(s);
    const path = s.inbox('alice@example.test');
    const spool = new Spool(s.dir);
    await spool.init();
    const size = (await stat(path)).size;
    await deliverThenDie(s.config, spool, newQueueId(), envelope('b@example.net', ['alice@example.test']), Buffer.from(SECOND));
    await truncate(path, size + 100);
    await spool.close();
    // A mail reader holds the mailbox's dotlock through the start.
    await writeFile(`${path}.lock`, `${holder.pid}\n`);
    const q = s.make({ lockTimeoutMs: 200 });
    await q.start();
    assert.equal(evts(s.lines, 'delivery.mbox_repair_failed').length, 1);
    assert.equal((await stat(path)).size, size + 100);
    assert.equal((await spoolFiles(s.dir)).length, 1, 'the record is kept');
    await q.stop();

    holder.kill();
    await new Promise((r) => holder.on('exit', r));
    const q2 = s.make();
    await q2.start();
    assert.deepEqual(bodies(path), ['first\n']);
    assert.equal(evts(s.lines, 'delivery.mbox_torn_repaired').length, 1);
    assert.deepEqual(await spoolFiles(s.dir), []);
    await q2.stop();
  } finally {
    holder.kill();
    await s.cleanup();
  }
});

test('LMTP into mbox: at start, mailboxes are checked side by side; one kept locked does not hold up the others', async () => {
  const s = await setup();
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    const alice = s.inbox('alice@example.test');
    const bob = s.inbox('bob@example.test');
    const spool = new Spool(s.dir);
    await spool.init();
    // alice's record is the older one (queue ids sort by time): checked one after another, bob's
    // would wait for alice's lock.
    await deliverThenDie(s.config, spool, newQueueId(), envelope('a@example.net', ['alice@example.test']), message('first\r\n'));
    await new Promise((r) => setTimeout(r, 5));
    await deliverThenDie(s.config, spool, newQueueId(), envelope('b@example.net', ['bob@example.test']), Buffer.from(SECOND), 'bob@example.test');
    await truncate(bob, 1500); // bob's only entry, torn 1500 bytes in
    await spool.close();
    // A mail reader holds alice's dotlock, and lets go only once bob's mailbox is repaired.
    await writeFile(`${alice}.lock`, `${holder.pid}\n`);
    const q = s.make({ lockTimeoutMs: 10_000 });
    let started = false;
    const starting = q.start().finally(() => (started = true));
    while (!started && evts(s.lines, 'delivery.mbox_torn_repaired').length === 0) await new Promise((r) => setTimeout(r, 10));
    await rm(`${alice}.lock`);
    await starting;
    assert.deepEqual(evts(s.lines, 'delivery.mbox_repair_failed'), [], 'no check waited out its lock timeout');
    assert.deepEqual(evts(s.lines, 'delivery.mbox_torn_repaired').map((l) => [l.file, l.offset]), [[bob, 0]]);
    assert.deepEqual(evts(s.lines, 'delivery.mbox_intent_dropped').map((l) => [l.file, l.outcome]), [[alice, 'complete']]);
    assert.equal((await stat(bob)).size, 0);
    assert.deepEqual(bodies(alice), ['first\n']);
    assert.deepEqual(await spoolFiles(s.dir), []);
    await q.stop();
  } finally {
    holder.kill();
    await s.cleanup();
  }
});

test('LMTP into mbox: deliveries leave no intent record behind', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const rcpts = ['alice@example.test', { address: 'bob@example.test', folder: 'Lists/Work' }];
    for (let i = 0; i < 3; i++) {
      const out = await q.deliverNow(q.newId(), envelope('a@example.net', rcpts), message(`n ${i}\r\n`));
      assert.deepEqual(out.map((o) => o.status), ['delivered', 'delivered']);
    }
    assert.deepEqual(await spoolFiles(s.dir), []);
    assert.deepEqual(bodies(s.inbox('alice@example.test')), ['n 0\n', 'n 1\n', 'n 2\n']);
    assert.deepEqual(bodies(join(`${s.inbox('bob@example.test')}.d`, 'Lists.Work')), ['n 0\n', 'n 1\n', 'n 2\n']);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('LMTP into mbox: no append without its durable intent record; the client hears 4xx', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const env = envelope('a@example.net', ['alice@example.test']);
    await q.deliverNow(q.newId(), env, message('first\r\n'));
    const path = s.inbox('alice@example.test');
    const bytes = await readFile(path);
    // Records are written through spool/tmp: with a file in its place no record can be made.
    const tmp = join(s.dir, 'spool', 'tmp');
    await rm(tmp, { recursive: true });
    await writeFile(tmp, 'in the way');
    const out = await q.deliverNow(q.newId(), env, message('second\r\n'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['deferred', 451]]);
    assert.deepEqual(await readFile(path), bytes);
    await rm(tmp);
    await mkdir(tmp);
    assert.deepEqual((await q.deliverNow(q.newId(), env, message('second\r\n'))).map((o) => o.status), ['delivered']);
    assert.deepEqual(bodies(path), ['first\n', 'second\n']);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('LMTP into mbox: a Sieve plan whose second store fails is retried without a second copy in the first folder', async () => {
  const t = await tempDir();
  const config = testConfig(t.dir, { ...MBOX, outbound: { retry: ['50ms'] } });
  const cap = captureLogger();
  const store = new MemoryStore();
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    await store.hset('sieve:scripts:alice@example.test', 'main', 'require ["fileinto", "mailbox"];\nfileinto :create "A";\nkeep;\n');
    await store.set('sieve:active:alice@example.test', 'main');
    const inbox = join(t.dir, 'mbox', 'alice@example.test');
    await mkdir(join(t.dir, 'mbox'), { recursive: true });
    // A mail reader holds INBOX's dotlock: the store into A succeeds, the one into INBOX fails.
    await writeFile(`${inbox}.lock`, `${holder.pid}\n`);
    const q = createMessageQueue({ config, log: cap.log, directory: new FakeDirectory(['example.test'], [...USERS]), store, mbox: { lockTimeoutMs: 100 } });
    await q.start();
    const id = q.newId();
    const out = await q.deliverNow(id, envelope('a@example.net', ['alice@example.test']), message('filed\r\n'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['queued', 250]]);
    assert.deepEqual(bodies(join(`${inbox}.d`, 'A')), ['filed\n']);
    // The record of the append into A stays, as the spooled entry's intent.
    assert.equal((await spoolFiles(t.dir)).filter((f) => f.endsWith('.intent')).length, 1);

    holder.kill();
    await new Promise((r) => holder.on('exit', r));
    await rm(`${inbox}.lock`, { force: true });
    for (let i = 0; i < 100 && (await spoolFiles(t.dir)).length > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      await q.idle();
    }
    assert.deepEqual(bodies(join(`${inbox}.d`, 'A')), ['filed\n']);
    assert.deepEqual(bodies(inbox), ['filed\n']);
    assert.deepEqual(await spoolFiles(t.dir), []);
    await q.stop();
  } finally {
    holder.kill();
    await store.close();
    await t.cleanup();
  }
});

// A recipient refused because its append failed after the record was written: the record stays
// for the check at start (a truncate-back that also failed would leave a torn entry behind), and
// that check, finding the mbox back at its size, removes it. The append is made to fail with a
// file size limit on this process (prlimit(1)): the write stops short with EFBIG.
test('LMTP into mbox: the record of an append that failed is kept for the check at start, which removes it', async () => {
  const s = await setup();
  try {
    await firstOverLmtp(s);
    const path = s.inbox('alice@example.test');
    const q = s.make();
    await q.start();
    // A mailbox larger than any file the delivery writes besides the append (its record).
    const big = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message(`Subject: big\r\n\r\n${'x'.repeat(70)}\r\n`.repeat(100)));
    assert.deepEqual(big.map((o) => o.status), ['delivered']);
    const size = (await stat(path)).size;
    const id = q.newId();
    await limitFileSize(size + 100);
    let out;
    try {
      out = await q.deliverNow(id, envelope('a@example.net', ['alice@example.test']), message(SECOND));
    } finally {
      await limitFileSize('unlimited');
    }
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['deferred', 451]]);
    assert.equal((await stat(path)).size, size, 'the append was taken back');
    assert.deepEqual((await spoolFiles(s.dir)).filter((f) => f.endsWith('.intent')).length, 1, 'its record is kept');
    await q.stop();
    const again = s.make();
    await again.start();
    await again.stop();
    assert.deepEqual(await spoolFiles(s.dir), []);
    assert.equal(evts(s.lines, 'delivery.mbox_intent_dropped').length, 1);
    assert.equal(bodies(path).length, 2);
  } finally {
    await s.cleanup();
  }
});

/** Sets this process's file size limit (RLIMIT_FSIZE) with prlimit(1), util-linux. */
async function limitFileSize(bytes: number | 'unlimited'): Promise<void> {
  const p = spawn('prlimit', ['--pid', String(process.pid), `--fsize=${bytes}:unlimited`], { stdio: 'inherit' });
  const code = await new Promise((r) => p.on('exit', r));
  assert.equal(code, 0, 'prlimit (util-linux) sets the file size limit');
}
