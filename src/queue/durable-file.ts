// Writes a file that is complete before anyone can see it: the parts go to a temp name in one
// writev, are fdatasync'ed, and only then renamed into place. A failure removes the temp file.
// The caller fsyncs the target folder (DirSyncer), so several renames can share one fsync.
import { open, rename, unlink } from 'node:fs/promises';

export async function writeThenRename(tmp: string, target: string, parts: Buffer[], mode = 0o600): Promise<void> {
  const fh = await open(tmp, 'w', mode);
  try {
    const total = parts.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await fh.writev(parts, 0);
    if (bytesWritten !== total) throw new Error(`short write to ${tmp} (${bytesWritten} of ${total} bytes)`);
    await fh.datasync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, target);
}
