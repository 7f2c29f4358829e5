// Writes a file that is complete before anyone can see it: the parts go to a temp name, are
// fdatasync'ed, and only then renamed into place. A failure removes the temp file.
// With `syncDir` the target's folder is fsynced too, so the new name is durable on return. When
// only that fsync fails, the file is already in place: the fsync is made once more through
// `opts.syncer` when that may help (`folderSyncRetryable`: opening the folder failed, not
// fsync(2) itself), and if it cannot or fails again the error says the file is in place
// (`renamedButNotSynced`: each caller decides what that means for it, see io-pool.ts).
// `opts.lf` and a NUL in the names (the size written): see IoPool.writeThenRename.
// The sequence runs on the I/O pool's threads (io-pool.ts explains why).
import { folderSyncRetryable, ioPool, renamedButNotSynced } from './io-pool.js';
import type { DirSyncer } from './dir-sync.js';

export { renamedButNotSynced, type RenamedButNotSynced } from './io-pool.js';

export async function writeThenRename(tmp: string, target: string, parts: Uint8Array[], mode = 0o600, syncDir?: string, opts: { lf?: boolean; syncer?: DirSyncer } = {}): Promise<string> {
  try {
    return await ioPool().writeThenRename(tmp, target, parts, mode, syncDir, opts);
  } catch (e) {
    if (!syncDir || !opts.syncer || !renamedButNotSynced(e) || !folderSyncRetryable(e)) throw e;
    // The retry's own error is not the story: the rename's folder is still not durable.
    if (!(await opts.syncer.sync(syncDir).then(() => true, () => false))) throw e;
    return e.target;
  }
}
