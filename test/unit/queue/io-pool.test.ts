// The I/O pool's durable write: what a failure tells the caller about the file it was writing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { IoPool } from '../../../src/queue/io-pool.js';
import { tempDir } from './helpers.js';

test('a folder fsync that fails after the rename says the file is in place, under which name', async () => {
  const { dir, cleanup } = await tempDir();
  const pool = new IoPool(1);
  try {
    // A folder that cannot be opened: the real failure of the step after the rename.
    const e = await pool.writeThenRename(join(dir, 'msg.tmp'), join(dir, 'msg.S=\0'), [Buffer.from('hello')], 0o600, join(dir, 'no-such-folder')).then(
      () => assert.fail('resolved'),
      (err: unknown) => err as NodeJS.ErrnoException & { renamed?: boolean; target?: string },
    );
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.renamed, true);
    assert.equal(e.target, join(dir, 'msg.S=5'));
    assert.deepEqual(await readdir(dir), ['msg.S=5']);
    assert.equal(await readFile(join(dir, 'msg.S=5'), 'utf8'), 'hello');
  } finally {
    await pool.close();
    await cleanup();
  }
});

test('a failure before the rename leaves nothing and says so', async () => {
  const { dir, cleanup } = await tempDir();
  const pool = new IoPool(1);
  try {
    const e = await pool.writeThenRename(join(dir, 'msg.tmp'), join(dir, 'missing', 'msg'), [Buffer.from('hello')], 0o600, dir).then(
      () => assert.fail('resolved'),
      (err: unknown) => err as NodeJS.ErrnoException & { renamed?: boolean },
    );
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'rename');
    assert.equal(e.renamed, undefined);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await pool.close();
    await cleanup();
  }
});
