// The maildrop: how `postern sendmail` hands a message to the queue whether or not the daemon
// runs (Postfix's postdrop/pickup split). Under `<data_dir>/maildrop/`:
//   tmp/<id>.<pid>   being written by sendmail
//   new/<id>         complete: the spool file format (spool.ts), fdatasync'ed, renamed here, and
//                    new/ fsynced before sendmail exits 0. When that fsync fails (after the
//                    rename) it is tried once more if opening new/ was what failed
//                    (io-pool.ts `folderSyncRetryable`); then the file is taken back (unlinked) and
//                    sendmail fails, so whoever runs it again sends the only copy. A file the
//                    daemon picked up meanwhile, or one that cannot be unlinked, is kept and the
//                    drop succeeds: the daemon delivers it.
// The daemon picks new/ up at start, on a file-system watch and every few seconds: it RENAMES
// new/<id> to spool/q/<id> (same file system: the file is in exactly one place at any time, so a
// crash can neither lose nor duplicate it), fsyncs both folders, and adopts the entry.
// A file that does not parse is moved to maildrop/bad/ and logged.
//
// Config keys: `data_dir`.
import { mkdir, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Envelope } from './envelope.js';
import { parseSpoolFile, spoolFileParts } from './spool.js';
import { isQueueId } from './queue-id.js';
import { DirSyncer } from './dir-sync.js';
import { renamedButNotSynced, writeThenRename, type RenamedButNotSynced } from './durable-file.js';
import { logEvent } from '../log/logger.js';

export function maildropDirs(dataDir: string) {
  const root = join(dataDir, 'maildrop');
  return { root, tmp: join(root, 'tmp'), new: join(root, 'new'), bad: join(root, 'bad') };
}

/** sendmail's side: durable in maildrop/new/ when this resolves. */
export async function dropMessage(dataDir: string, id: string, envelope: Envelope, message: Buffer): Promise<void> {
  if (!isQueueId(id)) throw new Error(`invalid queue id: ${id}`);
  const d = maildropDirs(dataDir);
  await mkdir(d.tmp, { recursive: true });
  await mkdir(d.new, { recursive: true });
  const syncer = new DirSyncer();
  // new/ itself must be durable before anything is promised in it.
  await syncer.sync(d.root);
  const tmp = join(d.tmp, `${id}.${process.pid}`);
  try {
    await writeThenRename(tmp, join(d.new, id), spoolFileParts(envelope, message), 0o600, d.new, { syncer });
  } catch (e) {
    if (!renamedButNotSynced(e)) throw e;
    await takeBack(e);
  }
}

/** Unlinks a dropped file whose name is not durable, then rejects; resolves when it is kept (see the header). */
async function takeBack(cause: RenamedButNotSynced): Promise<void> {
  try {
    await unlink(cause.target);
  } catch {
    return; // picked up by the daemon (ENOENT), or it stays for the daemon to pick up
  }
  throw Object.assign(new Error(`${cause.message} (the dropped message was taken back)`), { code: cause.code, cause });
}

export interface PickupTarget {
  queueDir: string;
  syncer: DirSyncer;
  adopt(id: string): Promise<void>;
}

/** The daemon's side: moves dropped messages into the spool. `stop` ends watching. */
export class MaildropPickup {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private again = false;
  private readonly dirs;

  constructor(
    dataDir: string,
    private readonly target: PickupTarget,
    private readonly log: Logger,
    private readonly intervalMs = 2000,
  ) {
    this.dirs = maildropDirs(dataDir);
  }

  async start(): Promise<void> {
    await mkdir(this.dirs.tmp, { recursive: true });
    await mkdir(this.dirs.new, { recursive: true });
    // Leftovers of a sendmail killed mid-write, once clearly abandoned (an hour).
    for (const n of await readdir(this.dirs.tmp)) {
      const p = join(this.dirs.tmp, n);
      const st = await stat(p).catch(() => null);
      if (st && Date.now() - st.mtimeMs > 3_600_000) await unlink(p).catch(() => undefined);
    }
    await this.scan();
    try {
      this.watcher = watch(this.dirs.new, () => void this.scan());
      this.watcher.on('error', () => undefined);
    } catch {
      this.watcher = null; // polling alone still picks everything up
    }
    this.timer = setInterval(() => void this.scan(), this.intervalMs);
    this.timer.unref();
  }

  /** One pass over new/; concurrent calls coalesce into one more pass. */
  scan(): Promise<void> {
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        await this.pass().catch((e: unknown) => logEvent(this.log, 'error', 'spool.error', { err: String(e) }, 'maildrop scan failed'));
      } while (this.again);
    })().finally(() => (this.scanning = null));
    return this.scanning;
  }

  private async pass(): Promise<void> {
    const names = (await readdir(this.dirs.new)).filter(isQueueId);
    for (const id of names.sort()) {
      const from = join(this.dirs.new, id);
      try {
        parseSpoolFile(await readFile(from));
      } catch (e) {
        await mkdir(this.dirs.bad, { recursive: true });
        await rename(from, join(this.dirs.bad, id)).catch(() => undefined);
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'unreadable maildrop file moved to maildrop/bad');
        continue;
      }
      await rename(from, join(this.target.queueDir, id));
      await Promise.all([this.target.syncer.sync(this.target.queueDir), this.target.syncer.sync(this.dirs.new)]);
      logEvent(this.log, 'info', 'queue.maildrop', { qid: id }, 'picked up from the maildrop');
      await this.target.adopt(id);
    }
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.scanning;
  }
}
