// Directory fsync with group commit. A rename or unlink is durable only once its directory is
// fsynced (POSIX rename(2) gives atomicity, not durability; Linux needs fsync on the directory).
// Many writers rename into the same directory at once (spool, a busy Maildir's new/), so callers
// share one fsync: a caller joins the next fsync that STARTS after it asked, never one already in
// flight (that one may have started before the caller's rename and would not cover it).
//
// Config keys: none.
import { ioPool } from './io-pool.js';

interface DirState {
  running: boolean;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

export class DirSyncer {
  private readonly dirs = new Map<string, DirState>();
  /** Number of fsync(2) calls issued; tests and the bench read it to see coalescing work. */
  syncs = 0;

  /** Resolves once an fsync of `dir` that started after this call has completed. */
  sync(dir: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let s = this.dirs.get(dir);
      if (!s) {
        s = { running: false, waiters: [] };
        this.dirs.set(dir, s);
      }
      s.waiters.push({ resolve, reject });
      if (!s.running) this.run(dir, s);
    });
  }

  private run(dir: string, s: DirState): void {
    const batch = s.waiters;
    s.waiters = [];
    s.running = true;
    this.fsyncDir(dir).then(
      () => batch.forEach((w) => w.resolve()),
      (e: unknown) => batch.forEach((w) => w.reject(e)),
    ).finally(() => {
      s.running = false;
      if (s.waiters.length) this.run(dir, s);
      else this.dirs.delete(dir);
    });
  }

  private async fsyncDir(dir: string): Promise<void> {
    this.syncs++;
    await ioPool().fsyncDir(dir);
  }

  async close(): Promise<void> {
    // Nothing held; the shared I/O pool lives as long as the process.
  }
}
