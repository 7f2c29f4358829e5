// Removal of finished spool entries in batches: the unlinks of many entries, and the one fsync
// of their folder that makes them durable, go to the I/O pool as ONE request.
//
// Why: every finished message is removed, and a relayed one's removal must be durable (else a
// crash would send it again). One request per unlink plus a shared folder fsync cost the main
// thread a thread hand-off and a reply each; under load, profiles of the relay path showed those
// hand-offs, not the system calls, as the cost. Batching is the folder fsync's group commit
// (dir-sync.ts) carried over to the unlinks that precede it.
//
// A request joins the next batch that has not started: the first one after a quiet spell waits
// until the end of the current event-loop turn (so a turn's removals go together), later ones
// while a batch is in flight go out together when it ends. Within a request the paths are
// unlinked in the order given and the first failure stops it (the spool removes a message before
// its side files: a message that could not be removed keeps its delivery state). The batch
// fsyncs its folder when any of its requests asked for durability; a failed fsync fails the
// durable requests only. When the pool itself fails, every request of the batch fails: the
// caller cannot know what was removed.
//
// Config keys: none.
import { ioPool } from './io-pool.js';

interface Removal {
  paths: string[];
  durable: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class UnlinkBatcher {
  private waiting: Removal[] = [];
  private running = false;
  private scheduled = false;
  /** Requests sent to the I/O pool so far, and those that fsynced the folder (tests read them). */
  batches = 0;
  syncs = 0;

  /** @param dir the folder every path is in, fsynced for durable removals */
  constructor(private readonly dir: string) {}

  /** Resolves once every path is gone (and, when `durable`, the removal survives a crash). */
  remove(paths: string[], durable: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ paths, durable, resolve, reject });
      if (this.running || this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.run();
      });
    });
  }

  private run(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.running = true;
    this.batches++;
    const durable = batch.some((r) => r.durable);
    if (durable) this.syncs++;
    ioPool()
      .unlinkAll(
        batch.map((r) => r.paths),
        durable ? this.dir : undefined,
      )
      .then(
        ({ errors, syncError }) => {
          batch.forEach((r, i) => {
            const err = errors[i] ?? (r.durable ? syncError : undefined);
            if (err) r.reject(err);
            else r.resolve();
          });
        },
        // The pool failed: which unlinks happened is unknown, so none is promised.
        (e: unknown) => batch.forEach((r) => r.reject(e)),
      )
      .finally(() => {
        this.running = false;
        if (this.waiting.length) this.run();
      });
  }
}
