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

test('a missing file counts as removed; another error fails only its own request', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a, c] = await files(dir, 2);
    // unlink(2) of a folder fails with EISDIR on Linux.
    const folder = join(dir, 'sub');
    await mkdir(folder);
    const b = new UnlinkBatcher(dir);
    const results = await Promise.allSettled([b.remove([a!, join(dir, 'gone')], true), b.remove([folder, c!], true)]);
    assert.equal(results[0].status, 'fulfilled');
    assert.equal(results[1].status, 'rejected');
    assert.match(((results[1] as PromiseRejectedResult).reason as NodeJS.ErrnoException).code ?? '', /^(EISDIR|EPERM)$/);
    assert.equal(b.batches, 1);
    // The failing path did not stop the paths after it.
    assert.deepEqual(await readdir(dir), ['sub']);
  } finally {
    await cleanup();
  }
});

test('when the folder fsync fails, every request of the batch fails', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a, c] = await files(dir, 2);
    const b = new UnlinkBatcher(join(dir, 'missing'));
    const results = await Promise.allSettled([b.remove([a!], true), b.remove([c!], false)]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal(((r as PromiseRejectedResult).reason as NodeJS.ErrnoException).code, 'ENOENT');
    }
  } finally {
    await cleanup();
  }
});

test('unlinkAll keeps the order of its paths and reports one result each', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const [a] = await files(dir, 1);
    const folder = join(dir, 'sub');
    await mkdir(folder);
    const errors = await ioPool().unlinkAll([a!, folder, join(dir, 'none')], dir);
    assert.equal(errors.length, 3);
    assert.equal(errors[0], undefined);
    assert.ok(errors[1] instanceof Error && (errors[1] as NodeJS.ErrnoException).path === folder);
    assert.equal(errors[2], undefined);
  } finally {
    await cleanup();
  }
});
