// Directory fsync with group commit. A rename or unlink is durable only once its directory is
// fsynced (POSIX rename(2) gives atomicity, not durability; Linux needs fsync on the directory).
// Many writers rename into the same directory at once (spool, a busy Maildir's new/), so callers
// share one fsync: a caller joins the next fsync that STARTS after it asked, never one already in
// flight (that one may have started before the caller's rename and would not cover it).
//
// Config keys: none.
import { open, type FileHandle } from 'node:fs/promises';

interface DirState {
  running: boolean;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

export class DirSyncer {
  private readonly dirs = new Map<string, DirState>();
  /** Handles kept open for directories we own and never remove (the spool). */
  private readonly held = new Map<string, Promise<FileHandle>>();
  /** Number of fsync(2) calls issued; tests and the bench read it to see coalescing work. */
  syncs = 0;

  /**
   * Keeps `dir` open so its fsyncs skip open/close. Only for directories that live as long as
   * this object: a handle on a removed and re-created directory would fsync the wrong inode.
   */
  hold(dir: string): void {
    if (!this.held.has(dir)) {
      const p = open(dir, 'r');
      p.catch(() => this.held.delete(dir));
      this.held.set(dir, p);
    }
  }

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
    const held = this.held.get(dir);
    if (held) {
      await (await held).sync();
      return;
    }
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async close(): Promise<void> {
    const hs = [...this.held.values()];
    this.held.clear();
    await Promise.all(hs.map(async (p) => (await p.catch(() => null))?.close()));
  }
}
