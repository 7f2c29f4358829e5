import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { MaildirWriter, maildirName } from '../../../src/delivery/maildir.js';
import { FolderNameError, folderSegments, maildirPlusName } from '../../../src/delivery/folder.js';
import { DeliveryError } from '../../../src/delivery/errors.js';
import { tempDir, testConfig } from '../queue/helpers.js';
import { LocalDelivery } from '../../../src/delivery/local.js';
import { readWithPython } from './python.js';
import { failFolderSyncs } from '../queue/folder-sync-faults.js';

const parts = (qid: string, key = 'k1') => ({ qid, receivedAt: 1_700_000_000_123, key, hostname: 'mx.example.test' });

test('folder names: validation and Maildir++ mapping', () => {
  const ok: [string | undefined, string][] = [
    [undefined, ''],
    ['INBOX', ''],
    ['inbox', ''],
    ['Junk', '.Junk'],
    ['Archive/2024', '.Archive.2024'],
    ['Archive.2024', '.Archive.2024'],
    ['INBOX/Quarantine', '.Quarantine'],
    ['Entwürfe', '.Entw&APw-rfe'],
  ];
  for (const [f, want] of ok) assert.equal(maildirPlusName(f), want, String(f));
  for (const bad of ['.hidden', '..', 'a/../b', 'a//b', 'a/', '/abs', 'a\\b', 'tab\there', 'x'.repeat(300)]) {
    assert.throws(() => folderSegments(bad), FolderNameError, bad);
  }
  // The name on disk gets a leading '.' (Maildir++) or ".lock" (an mbox dotlock): 250 bytes at most.
  assert.equal(maildirPlusName('x'.repeat(250)), `.${'x'.repeat(250)}`);
  assert.throws(() => folderSegments('x'.repeat(251)), FolderNameError);
  assert.throws(() => folderSegments(`a/${'é'.repeat(125)}`), FolderNameError);
});

test('a folder name too long for the disk is a permanent refusal, not a retry until the lifetime ends', async () => {
  const t = await tempDir('postern-longfolder-');
  try {
    const local = new LocalDelivery(testConfig(t.dir), new DirSyncer());
    const req = { qid: 'Q1', sender: 'a@example.net', receivedAt: Date.now(), user: 'alice@example.test', message: Buffer.from('Subject: x\r\n\r\nb\r\n'), checkExisting: false };
    await assert.rejects(local.deliver({ ...req, folder: 'f'.repeat(255) }), (e: unknown) => e instanceof DeliveryError && !e.temporary);
  } finally {
    await t.cleanup();
  }
});

test('file names follow the Maildir pattern and are safe', () => {
  assert.equal(maildirName(parts('Q1'), 42), '1700000000.M123000QQ1Rk1.mx.example.test,S=42');
  assert.equal(maildirName({ ...parts('Q1'), hostname: 'a/b:c,d' }, 1), '1700000000.M123000QQ1Rk1.a\\057b\\072c\\054d,S=1');
});

test('delivers into new/, creates the Maildir and Maildir++ folders, Python reads it back', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const w = new MaildirWriter(new DirSyncer());
    const root = join(dir, 'mail', 'alice');
    const bytes = Buffer.from('Return-Path: <a@example.net>\nDelivered-To: alice@example.test\nSubject: hi\n\nbody\n');
    const r = await w.deliver(root, undefined, parts('AAA'), bytes, false);
    assert.equal(r.duplicate, false);
    assert.ok(r.path.startsWith(join(root, 'new') + '/'));
    assert.deepEqual((await readdir(root)).sort(), ['cur', 'new', 'tmp']);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    assert.ok((await readFile(r.path)).equals(bytes));

    const q = await w.deliver(root, 'Quarantine/Spam', parts('BBB'), Buffer.from('Subject: q\n\nq\n'), false);
    assert.ok(q.path.startsWith(join(root, '.Quarantine.Spam', 'new')));
    assert.equal((await stat(join(root, '.Quarantine.Spam', 'maildirfolder'))).size, 0);

    const py = readWithPython('maildir', root);
    assert.equal(py.length, 1);
    assert.ok(py[0]!.bytes.equals(bytes));
    assert.deepEqual(py[0]!.folders, ['Quarantine.Spam']);
    const pyq = readWithPython('maildir', root, 'Quarantine.Spam');
    assert.equal(pyq[0]!.bytes.toString(), 'Subject: q\n\nq\n');
  } finally {
    await cleanup();
  }
});

test('a retry finds the earlier copy in new/ or in cur/ with flags', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const w = new MaildirWriter(new DirSyncer());
    const root = join(dir, 'm');
    const bytes = Buffer.from('Subject: once\n\n');
    const first = await w.deliver(root, undefined, parts('CCC'), bytes, false);
    const again = await w.deliver(root, undefined, parts('CCC'), bytes, true);
    assert.deepEqual(again, { path: first.path, duplicate: true });
    // A reader moved it to cur/ and flagged it seen; a client or Dovecot may also add fields.
    const base = first.path.split('/').pop()!;
    const moved = join(root, 'cur', `${base},W=20:2,S`);
    await rename(first.path, moved);
    assert.deepEqual(await w.deliver(root, undefined, parts('CCC'), bytes, true), { path: moved, duplicate: true });
    // Another recipient key or queue id is a different message.
    assert.equal((await w.deliver(root, undefined, parts('CCC', 'k2'), bytes, true)).duplicate, false);
    assert.equal((await w.deliver(root, undefined, parts('DDD'), bytes, true)).duplicate, false);
    assert.equal((await readdir(join(root, 'new'))).length + (await readdir(join(root, 'cur'))).length, 3);
  } finally {
    await cleanup();
  }
});

test('a Maildir removed under the writer is made again; bad folders are permanent errors', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const w = new MaildirWriter(new DirSyncer());
    const root = join(dir, 'm');
    await w.deliver(root, undefined, parts('EEE'), Buffer.from('x'), false);
    const { rm } = await import('node:fs/promises');
    await rm(root, { recursive: true });
    await w.deliver(root, undefined, parts('FFF'), Buffer.from('y'), false);
    assert.equal((await readdir(join(root, 'new'))).length, 1);
    await assert.rejects(w.deliver(root, '../escape', parts('GGG'), Buffer.from('z'), false), (e: unknown) => e instanceof DeliveryError && !e.temporary && e.code === 550);
    // A file where the Maildir should be: temporary local error.
    await mkdir(join(dir, 'blocked'), { recursive: true });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'blocked', 'file'), '');
    await assert.rejects(w.deliver(join(dir, 'blocked', 'file'), undefined, parts('HHH'), Buffer.from('z'), false), (e: unknown) => e instanceof DeliveryError && e.temporary && e.code === 451);
  } finally {
    await cleanup();
  }
});

test('a folder that cannot be opened once for its fsync after the rename is fsynced again: the delivery counts', async () => {
  const { dir, cleanup } = await tempDir();
  const root = join(dir, 'm');
  const w = new MaildirWriter(new DirSyncer());
  await w.ensure(root, root);
  const fault = failFolderSyncs(join(root, 'new'), 1, 'open');
  try {
    const r = await w.deliver(root, undefined, parts('EEE'), Buffer.from('Subject: once\n\n'), false);
    assert.equal(fault.failed, 1);
    assert.equal(r.duplicate, false);
    assert.deepEqual(await readdir(join(root, 'new')), [r.path.split('/').pop()]);
  } finally {
    fault.restore();
    await cleanup();
  }
});

test('a copy whose folder cannot be fsynced: a temporary failure that says the copy is stored; the retry counts it once the folder is fsynced', async () => {
  const { dir, cleanup } = await tempDir();
  const root = join(dir, 'm');
  const w = new MaildirWriter(new DirSyncer());
  await w.ensure(root, root);
  const bytes = Buffer.from('Subject: once\n\n');
  const fault = failFolderSyncs(join(root, 'new'));
  try {
    await assert.rejects(w.deliver(root, undefined, parts('FFF'), bytes, false), (e: DeliveryError) => e.temporary && e.stored);
    assert.equal((await readdir(join(root, 'new'))).length, 1, 'the copy is in new/');
    // Found, but still not durable: not a delivery yet.
    await assert.rejects(w.deliver(root, undefined, parts('FFF'), bytes, true), (e: DeliveryError) => e.temporary && e.stored);
    fault.heal();
    const r = await w.deliver(root, undefined, parts('FFF'), bytes, true);
    assert.equal(r.duplicate, true);
    assert.deepEqual(await readdir(join(root, 'new')), [r.path.split('/').pop()]);
  } finally {
    fault.restore();
    await cleanup();
  }
});
