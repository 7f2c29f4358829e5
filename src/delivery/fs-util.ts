// Small durable file system helpers shared by the Maildir and mbox writers.
//
// Config keys: none.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { DirSyncer } from '../queue/dir-sync.js';

/**
 * mkdir -p for each leaf, then fsync every directory that gained an entry, so a folder created
 * for a first delivery survives a crash along with the file put in it.
 */
export async function mkdirsDurable(leaves: string[], syncer: DirSyncer): Promise<void> {
  const toSync = new Set<string>();
  for (const leaf of leaves) {
    const first = await mkdir(leaf, { recursive: true });
    if (first === undefined) continue;
    let d = leaf;
    while (true) {
      toSync.add(dirname(d));
      if (d === first || dirname(d) === d) break;
      d = dirname(d);
    }
  }
  await Promise.all([...toSync].map((d) => syncer.sync(d)));
}
