// Writes a file that is complete before anyone can see it: the parts go to a temp name, are
// fdatasync'ed, and only then renamed into place. A failure removes the temp file.
// With `syncDir` the target's folder is fsynced too, so the new name is durable on return; when
// only that fsync fails, the file is already in place and the error says so
// (`renamedButNotSynced`: each caller decides what that means for it, see io-pool.ts).
// `opts.lf` and a NUL in the names (the size written): see IoPool.writeThenRename.
// The sequence runs on the I/O pool's threads (io-pool.ts explains why).
import { ioPool } from './io-pool.js';

export { folderSyncRetryable, renamedButNotSynced, type RenamedButNotSynced } from './io-pool.js';

export function writeThenRename(tmp: string, target: string, parts: Uint8Array[], mode = 0o600, syncDir?: string, opts: { lf?: boolean } = {}): Promise<string> {
  return ioPool().writeThenRename(tmp, target, parts, mode, syncDir, opts);
}
