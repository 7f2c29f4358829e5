// Scratch folders of the bench are removed at the end of the run, not after each figure.
// On ext4 without a journal, a new file's inode is never one freed in the last minute or more
// (ext4's recently_deleted check), so every file created after a mass deletion costs a walk past
// the freed inodes. Removing the 15,000 files of fsync-limit (or a figure's Maildirs) right
// away would make the next figure, and a second fsync-limit, pay for the previous one's
// cleanup: figures would depend on their order. Kept until the end, every figure starts from
// the file system state the run started with. Files a figure deletes itself (the relay spool)
// are part of what it measures and still cost what they cost.
//
// Config keys: none.
import { rm } from 'node:fs/promises';

const leftovers: string[] = [];

/** Marks a scratch folder for removal when the run ends. */
export function removeLater(dir: string): void {
  leftovers.push(dir);
}

/** Removes every folder marked so far. */
export async function removeScratch(): Promise<void> {
  for (const dir of leftovers.splice(0)) await rm(dir, { recursive: true, force: true });
}
