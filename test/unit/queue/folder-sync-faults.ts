// A folder fsync that fails, for tests: the disk fault a test cannot make the kernel produce, put
// into the durable-write layer (src/queue/io-pool.ts). The write and the rename into the folder
// happen for real; only the folder fsync that follows answers EIO, shaped as the pool reports a
// failure after the rename (`renamed`, `target`). Plain folder fsyncs of that folder
// (`fsyncDir`, as DirSyncer makes them) fail the same way while failures are left.
import { join } from 'node:path';
import { ioPool } from '../../../src/queue/io-pool.js';

export interface FolderSyncFault {
  /** Failures injected so far. */
  readonly failed: number;
  /** From now on every fsync of the folder works again. */
  heal(): void;
  /** Puts the pool's own methods back. */
  restore(): void;
}

/**
 * The next `times` fsyncs of `dir` fail (default: all of them until `heal`): fsync(2) itself
 * with EIO, or, `at: 'open'`, opening the folder with EMFILE (the failure that may be retried).
 */
export function failFolderSyncs(dir: string, times = Infinity, at: 'fsync' | 'open' = 'fsync'): FolderSyncFault {
  const pool = ioPool();
  const realWrite = pool.writeThenRename.bind(pool);
  const realSync = pool.fsyncDir.bind(pool);
  let left = times;
  let failed = 0;
  const fault = () => {
    if (left <= 0) return null;
    left--;
    failed++;
    if (at === 'open') return Object.assign(new Error(`EMFILE: too many open files, open '${dir}'`), { code: 'EMFILE', errno: -24, syscall: 'open', path: dir });
    return Object.assign(new Error(`EIO: i/o error, fsync '${dir}'`), { code: 'EIO', errno: -5, syscall: 'fsync', path: dir });
  };
  pool.writeThenRename = async (tmp, target, parts, mode, syncDir, opts) => {
    if (syncDir === undefined || join(syncDir) !== join(dir)) return realWrite(tmp, target, parts, mode, syncDir, opts);
    const written = await realWrite(tmp, target, parts, mode, undefined, opts);
    const e = fault();
    if (e) throw Object.assign(e, { renamed: true, target: written });
    await realSync(syncDir);
    return written;
  };
  pool.fsyncDir = async (path) => {
    if (join(path) === join(dir)) {
      const e = fault();
      if (e) throw e;
    }
    return realSync(path);
  };
  return {
    get failed() {
      return failed;
    },
    heal: () => void (left = 0),
    restore: () => {
      pool.writeThenRename = realWrite;
      pool.fsyncDir = realSync;
    },
  };
}
