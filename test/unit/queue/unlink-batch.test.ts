import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UnlinkBatcher } from '../../../src/queue/unlink-batch.js';
import { ioPool } from '../../../src/queue/io-pool.js';
import { tempDir } from './helpers.js';

async function files(dir: string, n: number): Promise<string[]> {
  const paths = Array.from({ length: n }, (_, i) => join(dir, `f${i}`));
  await Promise.all(paths.map((p) => writeFile(p, 'x')));
  return paths;
}

test('removals asked in one turn go as one request; those asked meanwhile as the next one', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const paths = await files(dir, 60);
    const b = new UnlinkBatcher(dir);
    const first = Promise.all(paths.slice(0, 30).map((p) => b.remove([p], true)));
    await new Promise((r) => setImmediate(r));
    assert.equal(b.batches, 1, 'the first turn went out as one batch');
    const second = Promise.all(paths.slice(30).map((p) => b.remove([p], false)));
    await Promise.all([first, second]);
    assert.equal(b.batches, 2);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await cleanup();
  }
});

test('a missing file counts as removed; another error fails only its own request and stops it there', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a, c, after] = await files(dir, 3);
    // unlink(2) of a folder fails with EISDIR on Linux.
    const folder = join(dir, 'sub');
    await mkdir(folder);
    const b = new UnlinkBatcher(dir);
    const results = await Promise.allSettled([b.remove([a!, join(dir, 'gone')], true), b.remove([folder, after!], true), b.remove([c!], false)]);
    assert.equal(results[0].status, 'fulfilled');
    assert.equal(results[1].status, 'rejected');
    assert.match(((results[1] as PromiseRejectedResult).reason as NodeJS.ErrnoException).code ?? '', /^(EISDIR|EPERM)$/);
    assert.equal(results[2].status, 'fulfilled');
    assert.equal(b.batches, 1);
    // The path after the failing one in the same request is kept (a message's state file stays
    // while the message does); the other requests' paths are gone.
    assert.deepEqual((await readdir(dir)).sort(), ['f2', 'sub']);
  } finally {
    await cleanup();
  }
});

test('a failed folder fsync fails the durable requests; the others only needed their unlinks', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a, c] = await files(dir, 2);
    const b = new UnlinkBatcher(join(dir, 'missing'));
    const results = await Promise.allSettled([b.remove([a!], true), b.remove([c!], false)]);
    assert.equal(results[0].status, 'rejected');
    assert.equal(((results[0] as PromiseRejectedResult).reason as NodeJS.ErrnoException).code, 'ENOENT');
    assert.equal(results[1].status, 'fulfilled');
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await cleanup();
  }
});

test('only a batch with a durable request fsyncs the folder', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a, c] = await files(dir, 2);
    const b = new UnlinkBatcher(dir);
    await b.remove([a!], false);
    assert.equal(b.syncs, 0);
    await b.remove([c!], true);
    assert.equal(b.syncs, 1);
  } finally {
    await cleanup();
  }
});

test('unlinkAll reports one result per group and the fsync apart', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a] = await files(dir, 1);
    const folder = join(dir, 'sub');
    await mkdir(folder);
    const r = await ioPool().unlinkAll([[a!], [folder], [join(dir, 'none')]], join(dir, 'missing'));
    assert.equal(r.errors.length, 3);
    assert.equal(r.errors[0], undefined);
    assert.ok(r.errors[1] instanceof Error && (r.errors[1] as NodeJS.ErrnoException).path === folder);
    assert.equal(r.errors[2], undefined);
    assert.equal((r.syncError as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
  } finally {
    await cleanup();
  }
});
