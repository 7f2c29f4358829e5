// Advisory whole-file locks (flock(2), via the fs-ext native addon) for files shared between
// Postern processes on one host: the daemon and CLI commands such as `postern user add`.
// A flock belongs to an open file description, so two descriptors of the same file conflict even
// inside one process; a lock dies with its process, so a crash never leaves a stale lock behind.
//
// Only non-blocking attempts are made here: a blocking flock would stall the event loop (sync) or
// tie up a libuv pool thread (async) for as long as another process holds the lock. Callers retry
// with a backoff and give up after a deadline, so a stopped peer yields an error, not a hang.
// Config keys read: none.
import { createRequire } from 'node:module';

interface FsExt {
  flockSync(fd: number, flags: 'ex' | 'exnb' | 'sh' | 'shnb' | 'un'): void;
}

const fsExt = createRequire(import.meta.url)('fs-ext') as FsExt;

export class LockTimeoutError extends Error {
  constructor(readonly path: string, readonly waitedMs: number) {
    super(`could not lock ${path} within ${waitedMs} ms (another process holds it)`);
    this.name = 'LockTimeoutError';
  }
}

/** Tries to take the exclusive lock once; true when taken, false when another holder has it. */
export function tryLockSync(fd: number): boolean {
  try {
    fsExt.flockSync(fd, 'exnb');
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return false;
    throw e;
  }
}

export function unlockSync(fd: number): void {
  fsExt.flockSync(fd, 'un');
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * Takes the lock, sleeping the thread between attempts. Only for start-up paths (opening a
 * store), where nothing else runs yet; holders keep the lock for a few milliseconds at most.
 */
export function lockSync(fd: number, path: string, timeoutMs: number): void {
  const start = Date.now();
  let wait = 1;
  while (!tryLockSync(fd)) {
    const waited = Date.now() - start;
    if (waited >= timeoutMs) throw new LockTimeoutError(path, waited);
    Atomics.wait(sleepCell, 0, 0, wait);
    wait = Math.min(wait * 2, 25);
  }
}

/** Takes the lock without blocking the event loop between attempts. */
export async function lock(fd: number, path: string, timeoutMs: number): Promise<void> {
  const start = Date.now();
  let wait = 1;
  while (!tryLockSync(fd)) {
    const waited = Date.now() - start;
    if (waited >= timeoutMs) throw new LockTimeoutError(path, waited);
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 25);
  }
}
