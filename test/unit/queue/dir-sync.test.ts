import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { tempDir } from './helpers.js';

test('concurrent callers share directory fsyncs', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const s = new DirSyncer();
    await Promise.all(Array.from({ length: 50 }, () => s.sync(dir)));
    // The first caller starts one fsync; the 49 that asked meanwhile share the next one.
    assert.equal(s.syncs, 2);
  } finally {
    await cleanup();
  }
});

test('a caller arriving during an fsync waits for a later one', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const s = new DirSyncer();
    const first = s.sync(dir);
    const second = s.sync(dir);
    await first;
    assert.equal(s.syncs >= 1, true);
    await second;
    assert.equal(s.syncs, 2);
    await s.sync(dir);
    assert.equal(s.syncs, 3);
  } finally {
    await cleanup();
  }
});

test('a missing directory fails with its errno code', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const s = new DirSyncer();
    await s.sync(dir);
    await assert.rejects(s.sync(`${dir}/missing`), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && /ENOENT/.test(e.message));
    await s.close();
  } finally {
    await cleanup();
  }
});
