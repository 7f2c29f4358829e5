// Writes a file that is complete before anyone can see it: the parts go to a temp name, are
// fdatasync'ed, and only then renamed into place. A failure removes the temp file.
// With `syncDir` the target's folder is fsynced too, so the new name is durable on return; when
// only that fsync fails, the file is already in place and the error says so
// (`renamedButNotSynced`: each caller decides what that means for it, see io-pool.ts).
// `opts.lf` and a NUL in the names (the size written): see IoPool.writeThenRename.
// The sequence runs on the I/O pool's threads (io-pool.ts explains why).
import { folderSyncRetryable, ioPool, type RenamedButNotSynced } from './io-pool.js';
import type { DirSyncer } from './dir-sync.js';

export { renamedButNotSynced, type RenamedButNotSynced } from './io-pool.js';

export function writeThenRename(tmp: string, target: string, parts: Uint8Array[], mode = 0o600, syncDir?: string, opts: { lf?: boolean } = {}): Promise<string> {
  return ioPool().writeThenRename(tmp, target, parts, mode, syncDir, opts);
}

/**
 * After writeThenRename failed with `renamedButNotSynced`: fsyncs the folder once more when that
 * may help (`folderSyncRetryable`: opening the folder failed, not fsync(2) itself). True when the
 * new name is durable now; the caller decides what a false means for it.
 */
export async function syncedOnRetry(e: RenamedButNotSynced, syncer: DirSyncer, dir: string): Promise<boolean> {
  return folderSyncRetryable(e) && (await syncer.sync(dir).then(() => true, () => false));
}
