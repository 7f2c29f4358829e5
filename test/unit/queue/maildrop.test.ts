// The maildrop's durable hand-off (`postern sendmail`) when maildrop/new/ cannot be fsynced after
// the rename: the caller is told "failed" only when nothing is left for the daemon to pick up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { dropMessage, maildropDirs } from '../../../src/queue/maildrop.js';
import { newQueueId } from '../../../src/queue/queue-id.js';
import { ioPool } from '../../../src/queue/io-pool.js';
import { envelope, message, tempDir } from './helpers.js';
import { failFolderSyncs } from './folder-sync-faults.js';

test('a maildrop folder that cannot be opened once for its fsync is fsynced again: the drop succeeds', async () => {
  const { dir, cleanup } = await tempDir();
  const d = maildropDirs(dir);
  await mkdir(d.new, { recursive: true });
  const fault = failFolderSyncs(d.new, 1, 'open');
  try {
    const id = newQueueId();
    await dropMessage(dir, id, envelope('a@example.test', ['b@example.test']), message('x'));
    assert.equal(fault.failed, 1);
    assert.deepEqual(await readdir(d.new), [id]);
  } finally {
    fault.restore();
    await cleanup();
  }
});

test('a maildrop that cannot be fsynced: the message is taken back before sendmail fails, nothing is picked up later', async () => {
  const { dir, cleanup } = await tempDir();
  const d = maildropDirs(dir);
  await mkdir(d.new, { recursive: true });
  const fault = failFolderSyncs(d.new);
  try {
    await assert.rejects(dropMessage(dir, newQueueId(), envelope('a@example.test', ['b@example.test']), message('x')), (e: NodeJS.ErrnoException) => e.code === 'EIO');
    assert.equal(fault.failed, 1, 'an fsync(2) error is not tried again');
    assert.deepEqual(await readdir(d.new), []);
    assert.deepEqual(await readdir(d.tmp), []);
  } finally {
    fault.restore();
    await cleanup();
  }
});

test('a drop the daemon picked up while new/ could not be fsynced counts as done (the daemon fsyncs it in the spool)', async () => {
  const { dir, cleanup } = await tempDir();
  const d = maildropDirs(dir);
  const q = join(dir, 'spool', 'q');
  await mkdir(d.new, { recursive: true });
  await mkdir(q, { recursive: true });
  const fault = failFolderSyncs(d.new, Infinity, 'open');
  // The daemon's pickup (maildrop.ts) runs between the failed fsync and the second one.
  const pool = ioPool();
  const failing = pool.fsyncDir.bind(pool);
  pool.fsyncDir = async (path) => {
    if (path === d.new) for (const name of await readdir(d.new)) await rename(join(d.new, name), join(q, name));
    return failing(path);
  };
  try {
    const id = newQueueId();
    await dropMessage(dir, id, envelope('a@example.test', ['b@example.test']), message('x'));
    assert.deepEqual(await readdir(q), [id]);
  } finally {
    fault.restore();
    await cleanup();
  }
});
