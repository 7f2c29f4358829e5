import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createMessageQueue, type EntryState } from '../../../src/queue/manager.js';
import { Spool } from '../../../src/queue/spool.js';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { LocalDelivery } from '../../../src/delivery/local.js';
import { FakeDirectory } from './fake-directory.js';
import { captureLogger, envelope, message, tempDir, testConfig } from './helpers.js';
import { readWithPython } from '../delivery/python.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { failFolderSyncs } from './folder-sync-faults.js';

const USERS = ['alice@example.test', 'bob@example.test'];

async function maildirFiles(dataDir: string, local: string): Promise<string[]> {
  const root = join(dataDir, 'mail', 'example.test', local);
  const out: string[] = [];
  for (const sub of ['new', 'cur']) for (const f of await readdir(join(root, sub)).catch(() => [] as string[])) out.push(join(root, sub, f));
  return out;
}

const spoolEntries = async (dataDir: string) => (await readdir(join(dataDir, 'spool', 'q'))).sort();
/** What is left in the spool is `n` DSNs to the (remote, so held) sender, nothing else. */
async function assertOnlyDsnsLeft(dataDir: string, n: number): Promise<void> {
  const ids = (await spoolEntries(dataDir)).filter((f) => !f.includes('.'));
  assert.equal(ids.length, n, `spool: ${ids.join(' ')}`);
  const sp = new Spool(dataDir, new DirSyncer());
  for (const id of ids) {
    const { envelope: env, message: m } = await sp.read(id);
    assert.equal(env.mailFrom, '');
    assert.equal(env.dsn, 1);
    assert.match(m.toString(), /Content-Type: multipart\/report; report-type=delivery-status/);
  }
}

const evts = (lines: Record<string, unknown>[], evt: string) => lines.filter((l) => l.evt === evt);

/** A file where the user's Maildir belongs: every delivery to that user fails for a while. */
async function blockMailbox(dataDir: string, local: string): Promise<void> {
  await mkdir(join(dataDir, 'mail', 'example.test'), { recursive: true });
  await writeFile(join(dataDir, 'mail', 'example.test', local), 'in the way');
}

/** An mbox delivery with the spool's intent records, as the queue makes one (a crash may follow). */
async function deliverWithIntents(config: Parameters<typeof createMessageQueue>[0]['config'], spool: Spool, id: string, env: ReturnType<typeof envelope>, msg: Buffer): Promise<void> {
  await new LocalDelivery(config, new DirSyncer()).deliver({
    qid: id, sender: env.mailFrom, receivedAt: env.receivedAt, user: 'alice@example.test', message: msg, checkExisting: false,
    intents: { get: (k) => spool.readIntent(id, k), put: (k, v) => spool.writeIntent(id, k, v) },
  });
}

async function setup(extra: Record<string, unknown> = {}) {
  const t = await tempDir();
  const config = testConfig(t.dir, extra);
  const directory = new FakeDirectory(['example.test'], [...USERS]);
  const cap = captureLogger();
  const make = () => createMessageQueue({ config, log: cap.log, directory });
  return { ...t, config, directory, ...cap, make };
}

/** alice's Maildir, made; from now on every fsync of its new/ fails (until the fault heals). */
async function aliceNewUnsyncable(s: Awaited<ReturnType<typeof setup>>) {
  const inbox = join(s.dir, 'mail', 'example.test', 'alice');
  await new LocalDelivery(s.config, new DirSyncer()).maildir.ensure(inbox, inbox);
  return { inbox, fault: failFolderSyncs(join(inbox, 'new')) };
}

/** A started queue whose store holds `script` as alice's active Sieve script. */
async function startedWithAliceScript(s: Awaited<ReturnType<typeof setup>>, script: string) {
  const store = new MemoryStore();
  await store.hset('sieve:scripts:alice@example.test', 'main', script);
  await store.set('sieve:active:alice@example.test', 'main');
  const q = createMessageQueue({ config: s.config, log: s.log, directory: s.directory, store });
  await q.start();
  return q;
}

/** The spool's answer when the disk is full. */
const diskFull = () => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });

/** A started queue where team@ reaches alice and bob, and bob's deliveries fail for now. */
async function teamWithBobBlocked(s: Awaited<ReturnType<typeof setup>>) {
  await blockMailbox(s.dir, 'bob');
  await s.directory.setAlias('team@example.test', USERS);
  const q = s.make();
  await q.start();
  return q;
}

test('local-only Maildir mail is delivered before accept returns, with trace headers, and never spooled', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const id = q.newId();
    const msg = message('Hello\r\nFrom the start\r\n');
    await q.accept(id, envelope('sender@example.net', ['alice@example.test', 'bob+tag@example.test']), msg);
    await q.idle();
    const want = (rcpt: string) => `Return-Path: <sender@example.net>\nDelivered-To: ${rcpt}\n${msg.toString().replace(/\r\n/g, '\n')}`;
    for (const u of ['alice', 'bob']) {
      const py = readWithPython('maildir', join(s.dir, 'mail', 'example.test', u));
      assert.equal(py.length, 1);
      assert.equal(py[0]!.bytes.toString(), want(`${u}@example.test`));
    }
    assert.deepEqual(await spoolEntries(s.dir), []);
    assert.equal(evts(s.lines, 'delivery.ok').length, 2);
    // Written once, into the Maildirs: no spool commit, no fallback.
    assert.equal(evts(s.lines, 'spool.commit').length, 0);
    assert.equal(evts(s.lines, 'delivery.direct_fallback').length, 0);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('NOTIFY=SUCCESS for a local recipient: delivered once, and a "delivered" DSN to the sender', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const env = envelope('sender@example.net', ['alice@example.test', 'bob@example.test']);
    env.recipients[0]!.notify = ['SUCCESS', 'FAILURE'];
    await q.accept(q.newId(), env, message('x'));
    await q.idle();
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.equal((await maildirFiles(s.dir, 'bob')).length, 1);
    // The sender is remote, so its DSN waits in the spool for the relay client.
    await assertOnlyDsnsLeft(s.dir, 1);
    const sp = new Spool(s.dir, new DirSyncer());
    const [dsnId] = (await spoolEntries(s.dir)).filter((f) => !f.includes('.'));
    const text = (await sp.read(dsnId!)).message.toString();
    assert.match(text, /Action: delivered/);
    assert.match(text, /Final-Recipient: rfc822; ?alice@example\.test/);
    assert.doesNotMatch(text, /bob@example\.test/, 'bob asked for no notice');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('unknown recipients are marked failed and logged; the entry goes away', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const id = q.newId();
    await q.accept(id, envelope('', ['nobody@example.test']), message('x'));
    await q.idle();
    assert.deepEqual(await spoolEntries(s.dir), []);
    const f = evts(s.lines, 'delivery.failed').filter((l) => l.qid === id);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.enhanced, '5.1.1');
    // A null-sender message is never bounced to its sender: the postmaster gets it once, and
    // that double bounce (no such postmaster here) is dropped, not bounced again.
    assert.deepEqual(evts(s.lines, 'queue.dsn').map((l) => l.to), ['postmaster@example.test']);
    assert.equal(evts(s.lines, 'queue.dsn.dropped').length, 1);
    // Nothing was relayed: the removals wait for the next commit's fsync of q/.
    assert.equal(q.spool.removalSyncs, 0);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('remote recipients are held in the spool across restarts', async () => {
  const s = await setup({ routes: { 'corp.example': 'smtp://10.0.0.5:25' } });
  try {
    const q = s.make();
    await q.start();
    const id = q.newId();
    await q.accept(id, envelope('a@example.test', ['x@corp.example', 'y@other.example', 'alice@example.test']), message('x'));
    await q.idle();
    assert.deepEqual(await spoolEntries(s.dir), [id, `${id}.state`]);
    const state = JSON.parse(await readFile(join(s.dir, 'spool', 'q', `${id}.state`), 'utf8')) as EntryState;
    // No next hop in the state: it is looked up when a recipient is sent (reroute.test.ts).
    assert.deepEqual(
      state.targets.map((t) => [t.kind, t.status, t.domain ?? null, 'via' in t]),
      [['remote', 'held', 'corp.example', false], ['remote', 'held', 'other.example', false], ['local', 'done', null, false]],
    );
    assert.equal(evts(s.lines, 'queue.held').length, 2);
    await q.stop();

    const q2 = s.make();
    await q2.start();
    await q2.idle();
    assert.deepEqual(await spoolEntries(s.dir), [id, `${id}.state`]);
    assert.deepEqual(q2.entries().map((e) => e.id), [id]);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

test('temporary failures retry with backoff; done-marks stop a finished target from repeating', async () => {
  const s = await setup({ outbound: { retry: ['100ms'] } });
  try {
    // bob's Maildir cannot be made: a plain file sits where it should be.
    const q = await teamWithBobBlocked(s);
    const id = q.newId();
    await q.accept(id, envelope('a@example.net', ['team@example.test']), message('x'));
    await q.idle();
    const state = JSON.parse(await readFile(join(s.dir, 'spool', 'q', `${id}.state`), 'utf8')) as EntryState;
    assert.deepEqual(state.targets.map((t) => [t.user, t.status]), [['alice@example.test', 'done'], ['bob@example.test', 'deferred']]);
    // alice's copy went in directly; bob's failure sent the entry through the spool.
    assert.deepEqual(evts(s.lines, 'delivery.direct_fallback').map((l) => l.rcpt), ['team@example.test']);
    assert.ok(evts(s.lines, 'delivery.deferred').length >= 1);
    // alice's copy is read and deleted; a retry must not bring it back.
    for (const f of await maildirFiles(s.dir, 'alice')) await unlink(f);
    await q.stop();

    await unlink(join(s.dir, 'mail', 'example.test', 'bob'));
    const q2 = s.make();
    await q2.start();
    await new Promise((r) => setTimeout(r, 250));
    await q2.idle();
    assert.equal((await maildirFiles(s.dir, 'bob')).length, 1);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 0);
    assert.deepEqual(await spoolEntries(s.dir), []);
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

// A direct delivery that stored some copies, then could not spool the rest, ends in 451: the
// client sends the message again, so the copies go first, or their recipients get two.
test('direct delivery: when the spool cannot take what failed, the stored copies are taken back before the 451; the retry gives each recipient one', async () => {
  const s = await setup();
  try {
    const q = await teamWithBobBlocked(s);
    const real = q.spool.accept.bind(q.spool);
    q.spool.accept = () => Promise.reject(diskFull());
    await assert.rejects(q.accept(q.newId(), envelope('a@example.net', ['team@example.test']), message('x')), /ENOSPC/);
    assert.deepEqual(await maildirFiles(s.dir, 'alice'), [], "alice's copy was taken back");
    assert.deepEqual(await spoolEntries(s.dir), []);
    assert.deepEqual(evts(s.lines, 'delivery.taken_back').map((l) => l.user), ['alice@example.test']);
    assert.equal(evts(s.lines, 'delivery.ok').length, 0, 'a copy taken back was never reported delivered');

    // The client's retry, once bob's mailbox and the spool work again.
    q.spool.accept = real;
    await unlink(join(s.dir, 'mail', 'example.test', 'bob'));
    await q.accept(q.newId(), envelope('a@example.net', ['team@example.test']), message('x'));
    await q.idle();
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.equal((await maildirFiles(s.dir, 'bob')).length, 1);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('direct delivery: a copy a reader has moved before it could be taken back stays, and is logged', async () => {
  const s = await setup();
  try {
    const q = await teamWithBobBlocked(s);
    q.spool.accept = async () => {
      // A reader (IMAP, POP3) takes alice's new copy into cur/ just before the spool fails.
      for (const f of await maildirFiles(s.dir, 'alice')) await rename(f, f.replace(`${join('alice', 'new')}`, join('alice', 'cur')) + ':2,S');
      throw diskFull();
    };
    await assert.rejects(q.accept(q.newId(), envelope('a@example.net', ['team@example.test']), message('x')), /ENOSPC/);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    const failed = evts(s.lines, 'delivery.take_back_failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.user, 'alice@example.test');
    assert.match(String(failed[0]!.err), /ENOENT/);
    assert.equal(evts(s.lines, 'delivery.taken_back').length, 0);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('a user removed while the message waited is a permanent failure', async () => {
  const s = await setup({ outbound: { retry: ['50ms'] } });
  try {
    await blockMailbox(s.dir, 'bob');
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('a@example.net', ['bob@example.test']), message('x'));
    await q.idle();
    await s.directory.deleteUser('bob@example.test');
    await new Promise((r) => setTimeout(r, 150));
    await q.idle();
    await assertOnlyDsnsLeft(s.dir, 1);
    assert.equal(evts(s.lines, 'delivery.failed').at(-1)!.enhanced, '5.1.1');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('a message past outbound.lifetime is given up', async () => {
  const s = await setup({ outbound: { retry: ['50ms'], lifetime: '1s' } });
  try {
    await blockMailbox(s.dir, 'bob');
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('a@example.net', ['bob@example.test'], Date.now() - 5000), message('x'));
    await q.idle();
    await assertOnlyDsnsLeft(s.dir, 1);
    assert.equal(evts(s.lines, 'delivery.failed').at(-1)!.why, 'lifetime exceeded');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

for (const where of ['new', 'cur'] as const) {
  test(`crash between the Maildir write and the done-mark: the retry stores no second copy (${where}/)`, async () => {
    const s = await setup();
    try {
      // What a first attempt leaves behind when killed right after the mailbox write.
      const spool = new Spool(s.dir);
      await spool.init();
      const id = '01HZZZZZZZ00000000';
      const env = envelope('a@example.net', ['alice@example.test']);
      const msg = message('once\r\n');
      await spool.accept(id, env, msg);
      const local = new LocalDelivery(s.config, new DirSyncer());
      const d = await local.deliver({ qid: id, sender: env.mailFrom, receivedAt: env.receivedAt, user: 'alice@example.test', message: msg, checkExisting: false });
      if (where === 'cur') {
        const file = d.destination.slice('maildir:'.length);
        await rename(file, file.replace('/new/', '/cur/') + ':2,S');
      }
      await spool.close();

      const q = s.make();
      await q.start();
      await q.idle();
      assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
      assert.equal(evts(s.lines, 'delivery.duplicate_skipped').length, 1);
      assert.deepEqual(await spoolEntries(s.dir), []);
      await q.stop();
    } finally {
      await s.cleanup();
    }
  });
}

test('mbox: delivery, and a crash after the append but before the done-mark', async () => {
  const s = await setup({ mailbox: { format: 'mbox', path: '{data_dir}/mbox/{user}' } });
  try {
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('', ['alice@example.test']), message('From me\r\n'));
    await q.idle();
    await q.stop();
    const path = join(s.dir, 'mbox', 'alice@example.test');
    assert.equal(readWithPython('mbox', path)[0]!.bytes.toString(), 'Return-Path: <>\nDelivered-To: alice@example.test\nFrom: a@example.net\nTo: b@example.test\nSubject: test\n\nFrom me\n');

    const spool = new Spool(s.dir);
    await spool.init();
    const id = '01HZZZZZZZ00000001';
    const env = envelope('a@example.net', ['alice@example.test']);
    await spool.accept(id, env, message('second'));
    await deliverWithIntents(s.config, spool, id, env, message('second'));
    await spool.close();
    const q2 = s.make();
    await q2.start();
    await q2.idle();
    assert.equal(readWithPython('mbox', path).length, 2);
    assert.equal(evts(s.lines, 'delivery.duplicate_skipped').length, 1);
    assert.deepEqual(await spoolEntries(s.dir), []);
    await q2.stop();
  } finally {
    await s.cleanup();
  }
});

test('mbox: a torn append is repaired at start before any other entry appends to that mailbox', async () => {
  const s = await setup({ mailbox: { format: 'mbox', path: '{data_dir}/mbox/{user}' } });
  try {
    const q = s.make();
    await q.start();
    await q.accept(q.newId(), envelope('a@example.net', ['alice@example.test']), message('body of the first\r\n'));
    await q.idle();
    await q.stop();
    const path = join(s.dir, 'mbox', 'alice@example.test');
    // Ten entries wait in the spool (older ids: listed first); X was being appended when the
    // daemon died.
    const spool = new Spool(s.dir);
    await spool.init();
    const waiting = Array.from({ length: 10 }, (_, i) => `01HZZZZZZZ0000000${i}`);
    const x = '01HZZZZZZZ0000000A';
    for (const [i, id] of waiting.entries()) await spool.accept(id, envelope('a@example.net', ['alice@example.test']), message(`body of Y${i}\r\n`));
    const envX = envelope('a@example.net', ['alice@example.test']);
    await spool.accept(x, envX, message('body of X\r\n'));
    const before = (await stat(path)).size;
    await deliverWithIntents(s.config, spool, x, envX, message('body of X\r\n'));
    await truncate(path, before + 60); // the crash tore X's append
    await spool.close();
    const q2 = s.make();
    await q2.start();
    await q2.idle();
    await q2.stop();
    const bodies = readWithPython('mbox', path).map((m) => m.bytes.toString().split('\n\n').slice(1).join('\n\n'));
    assert.deepEqual(bodies.sort(), ['body of X\n', ...waiting.map((_, i) => `body of Y${i}\n`), 'body of the first\n'].sort());
    assert.deepEqual(await spoolEntries(s.dir), []);
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP): one outcome per recipient, non-local ones spooled', async () => {
  const s = await setup();
  try {
    await blockMailbox(s.dir, 'bob');
    const q = s.make();
    await q.start();
    const id = q.newId();
    const out = await q.deliverNow(id, envelope('a@example.net', ['alice@example.test', 'nobody@example.test', 'x@remote.example', 'bob@example.test', 'bad address']), message('x'));
    assert.deepEqual(
      out.map((o) => [o.recipient.address, o.status, o.code, o.enhanced]),
      [
        ['alice@example.test', 'delivered', 250, '2.0.0'],
        ['nobody@example.test', 'failed', 550, '5.1.1'],
        ['x@remote.example', 'queued', 250, '2.0.0'],
        ['bob@example.test', 'deferred', 451, '4.3.0'],
        ['bad address', 'failed', 550, '5.1.3'],
      ],
    );
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.deepEqual(await spoolEntries(s.dir), [id, `${id}.state`]);
    const spooled = await new Spool(s.dir).read(id);
    assert.deepEqual(spooled.envelope.recipients.map((r) => r.address), ['x@remote.example']);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP): a recipient whose rest cannot be spooled hears 451 and its stored copies are taken back, unless a recipient answered 250 shares the file', async () => {
  const s = await setup();
  try {
    const q = await teamWithBobBlocked(s);
    await s.directory.setAlias('solo@example.test', ['alice@example.test']);
    q.spool.accept = () => Promise.reject(diskFull());
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['solo@example.test', 'team@example.test']), message('x'));
    assert.deepEqual(
      out.map((o) => [o.recipient.address, o.status, o.code]),
      [
        ['solo@example.test', 'delivered', 250],
        ['team@example.test', 'deferred', 451],
      ],
    );
    // Both recipients reach alice under one name (same user and folder): that file is solo's
    // copy (250) as well, so it stays although team heard 451.
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.deepEqual(evts(s.lines, 'delivery.taken_back'), []);
    assert.deepEqual(evts(s.lines, 'delivery.ok').map((l) => l.rcpt), ['solo@example.test']);

    // A recipient answered 451 alone: its copy is taken back.
    const out2 = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test']), message('y'));
    assert.deepEqual(out2.map((o) => [o.recipient.address, o.code]), [['team@example.test', 451]]);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1, "only the first message's copy");
    assert.deepEqual(evts(s.lines, 'delivery.taken_back').map((l) => l.rcpt), ['team@example.test']);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('direct delivery: a Sieve plan whose second store fails has its first copy taken back with the rest when the spool fails too', async () => {
  const s = await setup();
  try {
    // keep, then fileinto a folder that cannot be made (a plain file where .Blocked belongs).
    await mkdir(join(s.dir, 'mail', 'example.test', 'alice'), { recursive: true });
    await writeFile(join(s.dir, 'mail', 'example.test', 'alice', '.Blocked'), 'in the way');
    const q = await startedWithAliceScript(s, 'require "fileinto";\nkeep;\nfileinto "Blocked";\n');
    q.spool.accept = () => Promise.reject(diskFull());
    await assert.rejects(q.accept(q.newId(), envelope('a@example.net', ['alice@example.test']), message('x')), /ENOSPC/);
    assert.deepEqual(await maildirFiles(s.dir, 'alice'), [], 'the INBOX copy the plan stored first is gone');
    assert.equal(evts(s.lines, 'delivery.taken_back').length, 1);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP): a Sieve redirect queued before a 451 is not queued again when the client sends the message again', async () => {
  const s = await setup();
  try {
    await blockMailbox(s.dir, 'alice'); // the copy to keep cannot be stored for now
    const q = await startedWithAliceScript(s, 'require "copy";\nredirect :copy "carol@remote.example";\n');
    // The redirect is spooled before the store fails: alice's recipient hears 451.
    const msg = message('x', 'From: a@example.net\r\nTo: alice@example.test\r\nMessage-ID: <resent@example.net>\r\n');
    const first = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), msg);
    assert.deepEqual(first.map((o) => o.code), [451]);
    // The client sends it again (a new transaction, a new queue id) once the mailbox is back.
    await rm(join(s.dir, 'mail', 'example.test', 'alice'));
    const again = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), msg);
    assert.deepEqual(again.map((o) => o.code), [250]);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    const toCarol: string[] = [];
    for (const id of (await spoolEntries(s.dir)).filter((f) => !f.includes('.'))) {
      const { envelope: env } = await q.spool.read(id);
      if (env.recipients.some((r) => r.address === 'carol@remote.example')) toCarol.push(id);
    }
    assert.equal(toCarol.length, 1, 'one redirect in the spool');
    assert.equal(evts(s.lines, 'sieve.redirect').length, 1);
    assert.equal(evts(s.lines, 'sieve.redirect.duplicate').length, 1);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP): two recipients answered 451 that share one file take it back once, with no false failure; nothing is reported deferred', async () => {
  const s = await setup();
  try {
    const q = await teamWithBobBlocked(s);
    await s.directory.setAlias('team2@example.test', USERS);
    q.spool.accept = () => Promise.reject(diskFull());
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test', 'team2@example.test']), message('x'));
    assert.deepEqual(out.map((o) => o.code), [451, 451]);
    assert.deepEqual(await maildirFiles(s.dir, 'alice'), []);
    assert.equal(evts(s.lines, 'delivery.taken_back').length, 1);
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed'), []);
    assert.deepEqual(evts(s.lines, 'delivery.deferred'), [], "bob's failure is not reported deferred: both recipients heard 451, and the spool has nothing");
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

/** mbox mailboxes, team@ reaching alice and bob, solo@ reaching alice; bob's mailbox cannot be opened for now. */
async function mboxTeam() {
  const s = await setup({ mailbox: { format: 'mbox', path: '{data_dir}/mbox/{user}' } });
  await mkdir(join(s.dir, 'mbox', 'bob@example.test'), { recursive: true });
  await s.directory.setAlias('team@example.test', USERS);
  await s.directory.setAlias('solo@example.test', ['alice@example.test']);
  const q = s.make();
  await q.start();
  return { s, q, alice: join(s.dir, 'mbox', 'alice@example.test') };
}

const subjects = (path: string) => readWithPython('mbox', path).map((m) => /^Subject: (.*)$/m.exec(m.bytes.toString())?.[1]);

test('deliverNow (LMTP, mbox): two recipients reaching one user share one entry, as Maildir shares one file', async () => {
  const { s, q, alice } = await mboxTeam();
  try {
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['solo@example.test', 'alice@example.test']), message('x', 'Subject: one\r\n'));
    assert.deepEqual(out.map((o) => [o.recipient.address, o.status, o.code]), [['solo@example.test', 'delivered', 250], ['alice@example.test', 'delivered', 250]]);
    assert.deepEqual(subjects(alice), ['one']);
    assert.deepEqual(evts(s.lines, 'delivery.ok').map((l) => l.rcpt), ['solo@example.test']);
    assert.deepEqual(evts(s.lines, 'delivery.duplicate_skipped').map((l) => l.rcpt), ['alice@example.test']);
    assert.deepEqual(await spoolEntries(s.dir), [], 'no intent record left behind');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP, mbox): a recipient whose rest cannot be spooled hears 451 and its entry is cut off, unless a recipient answered 250 shares it', async () => {
  const { s, q, alice } = await mboxTeam();
  try {
    await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message('x', 'Subject: before\r\n'));
    const before = await readFile(alice);
    q.spool.accept = () => Promise.reject(diskFull());

    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test']), message('y', 'Subject: taken back\r\n'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['deferred', 451]]);
    assert.ok((await readFile(alice)).equals(before), 'the mbox is byte for byte what it was');
    assert.deepEqual(evts(s.lines, 'delivery.taken_back').map((l) => [l.rcpt, l.user, l.offset]), [['team@example.test', 'alice@example.test', before.length]]);
    assert.deepEqual(evts(s.lines, 'delivery.ok').map((l) => l.rcpt), ['alice@example.test'], 'only the first message was reported delivered');

    // solo@ (250) and team@ (451) share alice's entry, whichever comes first: it stays.
    const out2 = await q.deliverNow(q.newId(), envelope('a@example.net', ['solo@example.test', 'team@example.test']), message('z', 'Subject: shared\r\n'));
    assert.deepEqual(out2.map((o) => o.code), [250, 451]);
    const out3 = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test', 'solo@example.test']), message('z', 'Subject: shared too\r\n'));
    assert.deepEqual(out3.map((o) => o.code), [451, 250]);
    assert.deepEqual(subjects(alice), ['before', 'shared', 'shared too']);
    assert.equal(evts(s.lines, 'delivery.taken_back').length, 1);
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed'), []);
    assert.deepEqual(await spoolEntries(s.dir), [], 'no intent record left behind');
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP, mbox): an entry another program appended after is not cut off, and the take-back failure is logged', async () => {
  const { s, q, alice } = await mboxTeam();
  try {
    const theirs = 'From someone@example.net Thu Jan  4 05:06:07 2024\nSubject: theirs\n\nhello\n\n';
    q.spool.accept = async () => {
      await appendFile(alice, theirs);
      throw diskFull();
    };
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test']), message('y', 'Subject: ours\r\n'));
    assert.deepEqual(out.map((o) => o.code), [451]);
    assert.deepEqual(subjects(alice), ['ours', 'theirs'], 'both stay');
    assert.deepEqual(evts(s.lines, 'delivery.taken_back'), []);
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed').map((l) => [l.rcpt, l.offset, l.err]), [['team@example.test', 0, 'the mbox no longer ends with this entry']]);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP, mbox): entries of one file shared by several users are taken back last first; once one stays, the earlier ones do too', async () => {
  const s = await setup({ mailbox: { format: 'mbox', path: '{data_dir}/mbox/{domain}' } });
  try {
    await s.directory.setAlias('all@example.test', [...USERS, 'x@remote.example']);
    const q = s.make();
    await q.start();
    const box = join(s.dir, 'mbox', 'example.test');
    await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message('x', 'Subject: before\r\n'));
    const before = await readFile(box);
    q.spool.accept = () => Promise.reject(diskFull());
    // The remote target is held in the spool, which fails: 451, and both entries go.
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['all@example.test']), message('y', 'Subject: twice\r\n'));
    assert.deepEqual(out.map((o) => o.code), [451]);
    assert.ok((await readFile(box)).equals(before));
    assert.deepEqual(evts(s.lines, 'delivery.taken_back').map((l) => l.user), ['bob@example.test', 'alice@example.test']);

    // Another program appends after ours: neither of ours is cut off.
    q.spool.accept = async () => {
      await appendFile(box, 'From someone@example.net Thu Jan  4 05:06:07 2024\nSubject: theirs\n\nhello\n\n');
      throw diskFull();
    };
    const out2 = await q.deliverNow(q.newId(), envelope('a@example.net', ['all@example.test']), message('z', 'Subject: stays\r\n'));
    assert.deepEqual(out2.map((o) => o.code), [451]);
    assert.deepEqual(subjects(box), ['before', 'stays', 'stays', 'theirs']);
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed').map((l) => [l.user, l.err]), [
      ['bob@example.test', 'the mbox no longer ends with this entry'],
      ['alice@example.test', 'an entry after it in the mbox stays'],
    ]);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP): a copy a reader moved to cur/ between two recipients stays, whichever recipient heard 451', async () => {
  const s = await setup();
  try {
    const q = await teamWithBobBlocked(s);
    await s.directory.setAlias('solo@example.test', ['alice@example.test']);
    q.spool.accept = () => Promise.reject(diskFull());
    // A mail reader takes alice's new mail (new/ to cur/, seen) while the second recipient is routed.
    const expand = s.directory.expand.bind(s.directory);
    let moveOn = '';
    s.directory.expand = async (address, depth) => {
      if (address === moveOn && depth === undefined) {
        const fresh = join(s.dir, 'mail', 'example.test', 'alice', 'new');
        for (const f of await readdir(fresh)) await rename(join(fresh, f), join(fresh, '..', 'cur', `${f}:2,S`));
      }
      return expand(address, depth);
    };
    moveOn = 'team@example.test';
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test', 'team@example.test']), message('x', 'Subject: first\r\n'));
    assert.deepEqual(out.map((o) => o.code), [250, 451]);
    moveOn = 'solo@example.test';
    const out2 = await q.deliverNow(q.newId(), envelope('a@example.net', ['team@example.test', 'solo@example.test']), message('y', 'Subject: second\r\n'));
    assert.deepEqual(out2.map((o) => o.code), [451, 250]);
    const texts = await Promise.all((await maildirFiles(s.dir, 'alice')).map((p) => readFile(p, 'utf8')));
    assert.deepEqual(texts.map((t) => /^Subject: (.*)$/m.exec(t)?.[1]).sort(), ['first', 'second'], 'each 250 copy is still there');
    // Neither transaction tried to remove the copy: the first time the 451 recipient only found
    // it, the second time the 250 recipient's copy is the same one under its new name.
    assert.deepEqual(evts(s.lines, 'delivery.taken_back'), []);
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed'), []);
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('deliverNow (LMTP, mbox): an entry whose new file could not have its folder fsynced is cut off too when the spool then fails', async () => {
  const { s, q, alice } = await mboxTeam();
  // alice's mbox does not exist yet: the append makes it, and the folder fsync that follows fails.
  const fault = failFolderSyncs(dirname(alice));
  try {
    q.spool.accept = () => Promise.reject(diskFull());
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message('x'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['deferred', 451]]);
    assert.ok(fault.failed > 0, 'the folder fsync failed');
    assert.equal((await stat(alice)).size, 0, 'the entry is cut off; the file it made stays, empty');
    assert.deepEqual(evts(s.lines, 'delivery.taken_back').map((l) => [l.rcpt, l.offset]), [['alice@example.test', 0]]);
    await q.stop();
  } finally {
    fault.restore();
    await s.cleanup();
  }
});

test('deliverNow (LMTP): a copy whose folder fsync failed is taken back too when the spool then fails', async () => {
  const s = await setup();
  const { inbox, fault } = await aliceNewUnsyncable(s);
  try {
    const q = s.make();
    await q.start();
    q.spool.accept = () => Promise.reject(diskFull());
    const out = await q.deliverNow(q.newId(), envelope('a@example.net', ['alice@example.test']), message('x'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['deferred', 451]]);
    assert.deepEqual(await maildirFiles(s.dir, 'alice'), [], 'the copy is gone: the retry brings the only one');
    assert.equal(evts(s.lines, 'delivery.taken_back').length, 1);
    // The folder still cannot be fsynced: the removal may not survive a crash, and that is said.
    assert.deepEqual(evts(s.lines, 'delivery.take_back_failed').map((l) => l.folder), [join(inbox, 'new')]);
    await q.stop();
  } finally {
    fault.restore();
    await s.cleanup();
  }
});

test('deliverNow (LMTP): an alias with one target refused for good answers 250, and the sender gets a DSN for that target', async () => {
  const s = await setup();
  const store = new MemoryStore();
  try {
    s.directory.aliases.set('team@example.test', ['alice@example.test', 'bob@example.test']);
    await store.hset('sieve:scripts:bob@example.test', 'main', 'require "reject";\nreject "no thanks";\n');
    await store.set('sieve:active:bob@example.test', 'main');
    const q = createMessageQueue({ config: s.config, log: s.log, directory: s.directory, store });
    await q.start();
    const out = await q.deliverNow(q.newId(), envelope('alice@example.test', ['team@example.test']), message('for the team'));
    assert.deepEqual(out.map((o) => [o.recipient.address, o.status, o.code]), [['team@example.test', 'queued', 250]]);
    await q.idle();
    const texts = await Promise.all((await maildirFiles(s.dir, 'alice')).map((p) => readFile(p, 'utf8')));
    assert.equal(texts.length, 2, 'the message and the DSN');
    const dsn = texts.find((t) => /report-type=delivery-status/.test(t));
    assert.ok(dsn, 'a DSN reached the sender');
    assert.match(dsn, /Final-Recipient: rfc822; ?bob@example\.test/i);
    assert.match(dsn, /Action: failed/);
    assert.deepEqual(await spoolEntries(s.dir), []);
    await q.stop();
  } finally {
    await store.close();
    await s.cleanup();
  }
});

test('deliverNow (LMTP): a copy stored whose folder fsync failed is answered 250, not 4xx; its retry finds it, no second copy', async () => {
  const s = await setup();
  const { fault } = await aliceNewUnsyncable(s);
  try {
    const q = s.make();
    await q.start();
    const id = q.newId();
    const out = await q.deliverNow(id, envelope('a@example.net', ['alice@example.test']), message('x'));
    // A 4xx would make the client send it again under another queue id: a second copy.
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['queued', 250]]);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.deepEqual(q.entries().map((e) => e.targets?.map((t) => t.status)), [['deferred']]);
    // While the folder cannot be fsynced the copy found is not yet a delivery.
    await q.retry(id);
    await q.idle();
    assert.deepEqual(q.entries().map((e) => e.targets?.map((t) => t.status)), [['deferred']]);
    fault.heal();
    await q.retry(id);
    await q.idle();
    assert.deepEqual(q.entries(), []);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    assert.equal(evts(s.lines, 'delivery.duplicate_skipped').length, 1);
    assert.deepEqual(await spoolEntries(s.dir), []);
    await q.stop();
  } finally {
    fault.restore();
    await s.cleanup();
  }
});

test('a committed entry whose first state write fails is still answered 250 (SMTP fallback and LMTP); the next round writes the state', async () => {
  const s = await setup();
  try {
    await blockMailbox(s.dir, 'bob');
    const q = s.make();
    await q.start();
    const real = q.spool.writeState.bind(q.spool);
    let failures = 0;
    q.spool.writeState = (id, state) => (failures++ < 2 ? Promise.reject(Object.assign(new Error('EIO: write'), { code: 'EIO' })) : real(id, state));
    // SMTP: alice gets her copy at once, bob's waits in the spool; the state write fails.
    const id = q.newId();
    await q.accept(id, envelope('a@example.net', ['alice@example.test', 'bob@example.test']), message('x'));
    // LMTP: the remote recipient is spooled; the state write fails too.
    const id2 = q.newId();
    const out = await q.deliverNow(id2, envelope('a@example.net', ['x@remote.example']), message('y'));
    assert.deepEqual(out.map((o) => [o.status, o.code]), [['queued', 250]]);
    await q.idle();
    assert.equal(failures >= 2, true);
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 1);
    const files = await spoolEntries(s.dir);
    assert.ok(files.includes(id) && files.includes(`${id}.state`), `the round wrote the state: ${files.join(' ')}`);
    assert.ok(files.includes(id2));
    assert.deepEqual(q.entries().map((e) => e.id).sort(), [id, id2].sort());
    await q.stop();
  } finally {
    await s.cleanup();
  }
});

test('stop() waits for deliveries in progress; what was left is delivered after start()', async () => {
  const s = await setup();
  try {
    const q = s.make();
    await q.start();
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const id = q.newId();
      ids.push(id);
      await q.accept(id, envelope('a@example.net', ['alice@example.test']), message(`n ${i}`));
    }
    await q.stop();
    const left = (await spoolEntries(s.dir)).length;
    assert.equal((await maildirFiles(s.dir, 'alice')).length + left, 30);
    const q2 = s.make();
    await q2.start();
    await q2.idle();
    assert.equal((await maildirFiles(s.dir, 'alice')).length, 30);
    assert.deepEqual(await spoolEntries(s.dir), []);
    await q2.stop();
    await rm(join(s.dir, 'spool'), { recursive: true });
  } finally {
    await s.cleanup();
  }
});
