import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Spool, parseSpoolFile, SpoolFormatError } from '../../../src/queue/spool.js';
import { newQueueId } from '../../../src/queue/queue-id.js';
import { ioPool } from '../../../src/queue/io-pool.js';
import { captureLogger, envelope, tempDir } from './helpers.js';
import { failFolderSyncs } from './folder-sync-faults.js';

test('accept writes one file under q/ that reads back exactly', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const id = newQueueId();
    const env = envelope('a@example.net', ['b@example.test', { address: 'c@example.test', folder: 'Junk' }]);
    const msg = Buffer.concat([Buffer.from('Subject: x\r\n\r\n'), Buffer.from([0, 255, 10, 13, 0x80])]);
    await spool.accept(id, env, msg);
    assert.deepEqual(await readdir(join(dir, 'spool', 'q')), [id]);
    assert.deepEqual(await readdir(join(dir, 'spool', 'tmp')), []);
    const back = await spool.read(id);
    assert.deepEqual(back.envelope, env);
    assert.ok(back.message.equals(msg));
    await spool.close();
  } finally {
    await cleanup();
  }
});

test('init removes unfinished writes; list sorts and drops orphan side files', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const a = newQueueId();
    const b = newQueueId();
    await spool.accept(b, envelope('', ['x@example.test']), Buffer.from('b'));
    await spool.accept(a, envelope('', ['x@example.test']), Buffer.from('a'));
    await spool.writeState(a, { v: 1, targets: [] });
    await writeFile(join(dir, 'spool', 'tmp', `${newQueueId()}.1.1`), 'half a message');
    await writeFile(join(dir, 'spool', 'q', `${newQueueId()}.state`), '{}');
    await spool.close();

    const again = new Spool(dir);
    assert.deepEqual(await again.init(), { removedTemp: 1 });
    assert.deepEqual(await again.list(), [a, b]);
    assert.deepEqual((await readdir(join(dir, 'spool', 'q'))).sort(), [a, `${a}.state`, b].sort());
    assert.deepEqual(await again.readState(a), { v: 1, targets: [] });
    assert.equal(await again.readState(b), null);
    await again.remove(a);
    assert.deepEqual(await again.list(), [b]);
    await again.close();
  } finally {
    await cleanup();
  }
});

test('intents are kept per key and removed with the entry', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const id = newQueueId();
    await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m'));
    await spool.writeIntent(id, 'Labc', { offset: 5, length: 9 });
    assert.deepEqual(await spool.readIntent(id, 'Labc'), { offset: 5, length: 9 });
    assert.equal(await spool.readIntent(id, 'Lother'), null);
    await assert.rejects(spool.writeIntent(id, '../x', {}), /invalid intent key/);
    const fresh = new Spool(dir);
    await fresh.init();
    await fresh.list();
    assert.equal(fresh.hasIntents(id), true);
    await fresh.remove(id);
    assert.deepEqual(await readdir(join(dir, 'spool', 'q')), []);
    await spool.close();
    await fresh.close();
  } finally {
    await cleanup();
  }
});

test('intents without their message file are kept by list and handed out as orphans', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const owned = newQueueId();
    const orphan = newQueueId();
    await spool.accept(owned, envelope('', ['x@example.test']), Buffer.from('m'));
    await spool.writeIntent(owned, 'Labc', { offset: 1, length: 2 });
    await spool.writeIntent(orphan, 'Labc', { offset: 3, length: 4 });
    await spool.writeIntent(orphan, 'Ldef', { offset: 5, length: 6 });
    await writeFile(join(dir, 'spool', 'q', `${orphan}.Lbad.intent`), '{not json');
    await writeFile(join(dir, 'spool', 'q', 'junk.x.y.intent'), '{}');
    await spool.removeIntent(orphan, 'Ldef');
    assert.equal(spool.hasIntents(orphan), true, 'Labc is still there');
    await spool.removeIntent(orphan, 'Labc', { durable: true });
    assert.equal(spool.hasIntents(orphan), false);
    await spool.writeIntent(orphan, 'Labc', { offset: 3, length: 4 });

    const fresh = new Spool(dir);
    await fresh.init();
    const found = (await fresh.scan()).orphans;
    assert.deepEqual(
      found.sort((a, b) => a.key.localeCompare(b.key)),
      [
        { id: orphan, key: 'Labc', record: { offset: 3, length: 4 } },
        { id: orphan, key: 'Lbad', record: null },
      ],
    );
    assert.deepEqual(await fresh.list(), [owned]);
    assert.deepEqual((await readdir(join(dir, 'spool', 'q'))).sort(), [owned, `${owned}.Labc.intent`, `${orphan}.Labc.intent`, `${orphan}.Lbad.intent`].sort());
    assert.equal(fresh.hasIntents(owned), true);
    assert.equal(fresh.hasIntents(orphan), false);
    for (const o of found) await fresh.removeIntent(o.id, o.key);
    await fresh.remove(owned);
    assert.deepEqual(await readdir(join(dir, 'spool', 'q')), []);
    await spool.close();
    await fresh.close();
  } finally {
    await cleanup();
  }
});

test('scan: the entries oldest first and the orphan records from one reading of q/; stale side files go', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const [older, newer, gone] = [newQueueId(), newQueueId(), newQueueId()];
    await spool.accept(newer, envelope('', ['x@example.test']), Buffer.from('n'));
    await spool.accept(older, envelope('', ['x@example.test']), Buffer.from('o'));
    await spool.writeIntent(older, 'Labc', { offset: 1, length: 2 });
    await spool.writeIntent(gone, 'Ldef', { offset: 3, length: 4 });
    // A state file whose message was removed (a crash inside remove).
    await writeFile(join(dir, 'spool', 'q', `${gone}.state`), '{}');
    await spool.close();

    const fresh = new Spool(dir);
    await fresh.init();
    const { ids, orphans } = await fresh.scan();
    assert.deepEqual(ids, [older, newer].sort());
    assert.deepEqual(orphans, [{ id: gone, key: 'Ldef', record: { offset: 3, length: 4 } }]);
    assert.equal(fresh.hasIntents(older), true);
    assert.deepEqual((await readdir(join(dir, 'spool', 'q'))).sort(), [older, `${older}.Labc.intent`, newer, `${gone}.Ldef.intent`].sort(), 'the stale state file is gone, the orphan record stays for its check');
    await fresh.close();
  } finally {
    await cleanup();
  }
});

test('bad ids and damaged files are refused', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    await assert.rejects(spool.accept('../../etc/x', envelope('', []), Buffer.alloc(0)), /invalid queue id/);
    const id = newQueueId();
    await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('hello'));
    const raw = await readFile(join(dir, 'spool', 'q', id));
    assert.throws(() => parseSpoolFile(raw.subarray(0, 20)), SpoolFormatError);
    assert.throws(() => parseSpoolFile(Buffer.from('garbage\n')), SpoolFormatError);
    assert.equal(parseSpoolFile(raw).message.toString(), 'hello');
    await spool.close();
  } finally {
    await cleanup();
  }
});

test('a message that cannot be removed keeps its state file (its delivery marks stay)', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const spool = new Spool(dir);
    await spool.init();
    const id = newQueueId();
    await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m'));
    await spool.writeState(id, { v: 1, targets: [] });
    // A folder in the message's place: unlink(2) fails with EISDIR.
    await unlink(join(dir, 'spool', 'q', id));
    await mkdir(join(dir, 'spool', 'q', id));
    await assert.rejects(spool.remove(id, { durable: true }), (e: NodeJS.ErrnoException) => e.code === 'EISDIR' || e.code === 'EPERM');
    assert.deepEqual((await readdir(join(dir, 'spool', 'q'))).sort(), [id, `${id}.state`]);
    await spool.close();
  } finally {
    await cleanup();
  }
});

test('a folder that cannot be opened once for its fsync after the rename: fsynced again, the message is committed', async () => {
  const { dir, cleanup } = await tempDir();
  const spool = new Spool(dir);
  await spool.init();
  const fault = failFolderSyncs(join(dir, 'spool', 'q'), 1, 'open');
  try {
    const id = newQueueId();
    await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m'));
    assert.equal(fault.failed, 1);
    assert.deepEqual(await spool.list(), [id]);
    assert.equal((await spool.read(id)).message.toString(), 'm');
  } finally {
    fault.restore();
    await spool.close();
    await cleanup();
  }
});

// An fsync(2) error is reported once per descriptor open at the time (Linux 4.13 on): a second
// fsync through a new descriptor may succeed with the folder entry still not on disk.
test('a folder fsync(2) error after the rename is not tried again: the commit is taken back though a second fsync would pass', async () => {
  const { dir, cleanup } = await tempDir();
  const spool = new Spool(dir);
  await spool.init();
  const fault = failFolderSyncs(join(dir, 'spool', 'q'), 1);
  try {
    await assert.rejects(spool.accept(newQueueId(), envelope('', ['x@example.test']), Buffer.from('m')), (e: NodeJS.ErrnoException) => e.code === 'EIO');
    assert.equal(fault.failed, 1);
    assert.deepEqual(await spool.list(), []);
  } finally {
    fault.restore();
    await spool.close();
    await cleanup();
  }
});

test('a folder fsync that keeps failing after the rename: the commit is taken back, nothing is left to deliver later', async () => {
  const { dir, cleanup } = await tempDir();
  const cap = captureLogger();
  const spool = new Spool(dir, undefined, cap.log);
  await spool.init();
  const fault = failFolderSyncs(join(dir, 'spool', 'q'));
  try {
    const id = newQueueId();
    await assert.rejects(spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m')), (e: NodeJS.ErrnoException) => e.code === 'EIO');
    assert.equal(fault.failed, 1, 'an fsync(2) error is not tried again');
    assert.deepEqual(await readdir(join(dir, 'spool', 'q')), []);
    assert.deepEqual(await readdir(join(dir, 'spool', 'tmp')), []);
    fault.heal();
    assert.deepEqual(await new Spool(dir).list(), [], 'a restart finds nothing');
  } finally {
    fault.restore();
    await spool.close();
    await cleanup();
  }
});

test('a commit that can neither be fsynced nor taken back stands: the caller is not told to send again what is kept', async () => {
  const { dir, cleanup } = await tempDir();
  const cap = captureLogger();
  const spool = new Spool(dir, undefined, cap.log);
  await spool.init();
  const fault = failFolderSyncs(join(dir, 'spool', 'q'));
  const pool = ioPool();
  const realUnlink = pool.unlinkAll.bind(pool);
  pool.unlinkAll = async (groups) => ({ errors: groups.map(() => Object.assign(new Error('EIO: i/o error, unlink'), { code: 'EIO' })) });
  try {
    const id = newQueueId();
    await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m'));
    assert.deepEqual(await readdir(join(dir, 'spool', 'q')), [id]);
    assert.equal(cap.lines.filter((l) => l.evt === 'spool.error' && l.qid === id).length, 1, 'logged');
  } finally {
    pool.unlinkAll = realUnlink;
    fault.restore();
    await spool.close();
    await cleanup();
  }
});

test('a state file replaced but not fsynced is reported failed (it is written again) and not taken back', async () => {
  const { dir, cleanup } = await tempDir();
  const spool = new Spool(dir);
  await spool.init();
  const id = newQueueId();
  await spool.accept(id, envelope('', ['x@example.test']), Buffer.from('m'));
  await spool.writeState(id, { v: 1, n: 1 });
  const fault = failFolderSyncs(join(dir, 'spool', 'q'));
  try {
    await assert.rejects(spool.writeState(id, { v: 1, n: 2 }), (e: NodeJS.ErrnoException) => e.code === 'EIO');
    assert.deepEqual(await spool.readState(id), { v: 1, n: 2 });
    fault.heal();
    await spool.writeState(id, { v: 1, n: 2 });
    assert.deepEqual(await spool.list(), [id]);
  } finally {
    fault.restore();
    await spool.close();
    await cleanup();
  }
});
