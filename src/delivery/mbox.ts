// mbox delivery in the mboxrd flavour (https://www.loc.gov/preservation/digital/formats/fdd/fdd000385.shtml;
// RFC 4155 describes the family):
//   - each message starts with "From <envelope sender or MAILER-DAEMON> <asctime>\n", the date in
//     UTC as asctime(3) writes it ("Thu Jan  4 05:06:07 2024"), taken from the acceptance time
//     so the bytes of an entry are the same on every attempt;
//   - every line matching /^>*From / gets one more '>' (mboxrd: reversible, unlike mboxo);
//   - the message ends with a newline (one is added when the last line has none — mbox cannot
//     keep that difference) and a blank line follows it.
// Lines end in LF (trace.ts converts).
//
// Locking, in this order, released in reverse: an in-process queue per file, a dotlock
// "<mbox>.lock" (created with O_EXCL, then our pid written into it; one older than
// `staleLockMs`, one naming a pid that no longer runs on this host, or one still empty 10 s
// after it was made, is taken as left by a dead process and removed), then flock(2) LOCK_EX on
// the mbox itself (fs-ext; polled with LOCK_NB so no libuv worker thread blocks). Mail readers
// use one or both of these conventions.
//
// Never a torn message: the append is written at the size found under the lock; if the write or
// the fdatasync fails, the file is truncated back to that size. A crash in the middle of a write
// is repaired on retry through the INTENT record (offset and length, written durably before the
// append, by the caller's intent store): if the file holds our exact entry at that offset, the
// delivery already happened; if it ends inside a prefix of our entry, it is truncated back to
// the offset and written again.
//
// Sub-folders: "<mbox>.d/<A.B>" — a flat folder next to the INBOX file, one mbox file per folder,
// hierarchy segments joined by '.' (folder.ts).
//
// Config keys: `mailbox.format` (mbox), `mailbox.path`.
import { open, readFile, stat, unlink, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DirSyncer } from '../queue/dir-sync.js';
import { DeliveryErrors, fromFsError } from './errors.js';
import { FolderNameError, folderDiskName, type FolderNames } from './folder.js';
import { mkdirsDurable } from './fs-util.js';

const fsExt = createRequire(import.meta.url)('fs-ext') as {
  flock(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un', cb: (err: NodeJS.ErrnoException | null) => void): void;
};

function flock(fd: number, flags: 'exnb' | 'un'): Promise<void> {
  return new Promise((resolve, reject) => fsExt.flock(fd, flags, (err) => (err ? reject(err) : resolve())));
}

/** A dotlock still empty this long after it was made was left by a writer killed in between. */
const EMPTY_LOCK_GRACE_MS = 10_000;

/** Dotlocks this process holds now (every MboxWriter of it). */
const heldLocks = new Set<string>();

/**
 * True when the dotlock names a process of this host that no longer runs (or stayed empty). A
 * lock with our own pid that we do not hold was left by an earlier process with the same pid:
 * in a container the daemon is pid 1 after every restart.
 */
async function holderIsDead(lock: string, mtimeMs: number): Promise<boolean> {
  const text = await readFile(lock, 'utf8').catch(() => null);
  if (text === null) return false;
  if (text.trim() === '') return Date.now() - mtimeMs > EMPTY_LOCK_GRACE_MS;
  const pid = Number(text.trim());
  if (pid === process.pid) return !heldLocks.has(lock);
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad2 = (n: number) => String(n).padStart(2, '0');

/** asctime(3) format in UTC: "Www Mmm dd hh:mm:ss yyyy", the day padded with a space. */
export function asctime(ms: number): string {
  const d = new Date(ms);
  return `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

/** mboxrd quoting: one more '>' before every line matching /^>*From /. */
export function mboxrdQuote(body: Buffer): Buffer {
  // latin1 maps bytes 1:1, so non-ASCII bytes pass through untouched.
  const s = body.toString('latin1');
  if (!s.includes('From ')) return body;
  // A line starts after LF only: the m flag's ^ also matches after a bare CR, which readers do
  // not take for a line start, so they would keep the extra '>'.
  return Buffer.from(s.replace(/(^|\n)(>*From )/g, '$1>$2'), 'latin1');
}

/** mboxrd unquoting (the inverse of mboxrdQuote), for readers and tests. */
export function mboxrdUnquote(body: Buffer): Buffer {
  const s = body.toString('latin1');
  return Buffer.from(s.replace(/(^|\n)>(>*From )/g, '$1$2'), 'latin1');
}

/** One complete mbox entry: From line, quoted message (LF endings), final newline, blank line. */
export function mboxEntry(sender: string, receivedAt: number, message: Buffer): Buffer {
  // The From line is space-separated: an address with spaces (a quoted local part) would break it.
  const from = sender === '' ? 'MAILER-DAEMON' : sender.replace(/[\s]/g, '_');
  const head = Buffer.from(`From ${from} ${asctime(receivedAt)}\n`, 'utf8');
  const body = mboxrdQuote(message);
  const tail = body.length === 0 || body[body.length - 1] === 10 ? '\n' : '\n\n';
  return Buffer.concat([head, body, Buffer.from(tail)]);
}

export interface MboxIntent {
  offset: number;
  length: number;
}

/** Where the caller keeps the intent of this one delivery, durably. */
export interface MboxIntentStore {
  get(): Promise<MboxIntent | null>;
  put(intent: MboxIntent): Promise<void>;
}

export interface MboxOptions {
  /** Give up (temporary failure) after waiting this long for the locks. */
  lockTimeoutMs?: number;
  /** A dotlock older than this is stale and removed. */
  staleLockMs?: number;
  /** How folder names are written on disk (folder.ts; `mailbox.folder_names`). */
  folderNames?: FolderNames;
}

export interface MboxDeliveryResult {
  path: string;
  duplicate: boolean;
  /** Offset the entry starts at. */
  offset: number;
}

export class MboxWriter {
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly lockTimeoutMs: number;
  private readonly staleLockMs: number;
  private readonly folderNames: FolderNames;

  constructor(
    private readonly syncer: DirSyncer,
    opts: MboxOptions = {},
  ) {
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 30_000;
    this.staleLockMs = opts.staleLockMs ?? 5 * 60_000;
    this.folderNames = opts.folderNames ?? 'utf7';
  }

  /** The mbox file of `folder` for INBOX file `path`; throws DeliveryError for a bad name. */
  folderPath(path: string, folder: string | undefined): string {
    try {
      const name = folderDiskName(folder, this.folderNames);
      if (!name) return path;
      // "A.lock" would be the file that folder "A" locks with (its dotlock).
      if (/\.lock$/i.test(name)) throw new FolderNameError('an mbox folder name may not end in ".lock"');
      return join(`${path}.d`, name);
    } catch (e) {
      if (e instanceof FolderNameError) throw DeliveryErrors.badFolder(e);
      throw e;
    }
  }

  /**
   * Appends one entry (from mboxEntry) to the mbox for `folder`. With `intent`, the offset is
   * recorded durably before writing, and when `checkExisting` is set an earlier attempt is
   * looked for (see the header). Throws DeliveryError.
   */
  async deliver(path: string, folder: string | undefined, entry: Buffer, opts: { intent?: MboxIntentStore; checkExisting?: boolean } = {}): Promise<MboxDeliveryResult> {
    const file = this.folderPath(path, folder);
    // In-process serialisation per file: cheaper than everyone polling the dotlock.
    const prev = this.queues.get(file) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.deliverLocked(file, entry, opts));
    this.queues.set(file, run);
    try {
      return await run;
    } finally {
      if (this.queues.get(file) === run) this.queues.delete(file);
    }
  }

  private async deliverLocked(file: string, entry: Buffer, opts: { intent?: MboxIntentStore; checkExisting?: boolean }): Promise<MboxDeliveryResult> {
    try {
      await mkdirsDurable([dirname(file)], this.syncer);
      const lock = `${file}.lock`;
      await this.dotlock(lock);
      try {
        const fh = await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
        try {
          await this.flock(fh);
          try {
            return await this.append(file, fh, entry, opts);
          } finally {
            await flock(fh.fd, 'un').catch(() => undefined);
          }
        } finally {
          await fh.close();
        }
      } finally {
        heldLocks.delete(lock);
        await unlink(lock).catch(() => undefined);
      }
    } catch (e) {
      throw fromFsError(e);
    }
  }

  private async append(file: string, fh: FileHandle, entry: Buffer, opts: { intent?: MboxIntentStore; checkExisting?: boolean }): Promise<MboxDeliveryResult> {
    let size = (await fh.stat()).size;
    if (opts.checkExisting && opts.intent) {
      const rec = await opts.intent.get();
      if (rec && rec.length === entry.length && size > rec.offset) {
        const have = Math.min(size - rec.offset, entry.length);
        const buf = Buffer.alloc(have);
        await fh.read(buf, 0, have, rec.offset);
        if (buf.equals(entry.subarray(0, have))) {
          if (have === entry.length) return { path: file, duplicate: true, offset: rec.offset };
          if (rec.offset + have === size) {
            // A crash tore our entry at the end of the file: cut it off and write it again.
            await fh.truncate(rec.offset);
            await fh.datasync();
            size = rec.offset;
          }
        }
      }
    }
    const created = size === 0;
    if (opts.intent) await opts.intent.put({ offset: size, length: entry.length });
    try {
      let done = 0;
      while (done < entry.length) {
        const { bytesWritten } = await fh.write(entry, done, entry.length - done, size + done);
        if (bytesWritten <= 0) throw new Error('write made no progress');
        done += bytesWritten;
      }
      await fh.datasync();
    } catch (e) {
      // Never leave a torn message behind.
      await fh.truncate(size).catch(() => undefined);
      await fh.datasync().catch(() => undefined);
      throw e;
    }
    if (created) await this.syncer.sync(dirname(file));
    return { path: file, duplicate: false, offset: size };
  }

  private async dotlock(lock: string): Promise<void> {
    const deadline = Date.now() + this.lockTimeoutMs;
    let wait = 5;
    while (true) {
      try {
        const fh = await open(lock, 'wx', 0o600);
        // Ours from this moment (before the pid is in it): see holderIsDead.
        heldLocks.add(lock);
        try {
          await fh.writeFile(`${process.pid}\n`);
        } catch (e) {
          heldLocks.delete(lock);
          await unlink(lock).catch(() => undefined);
          throw e;
        } finally {
          await fh.close();
        }
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const st = await stat(lock).catch(() => null);
      if (st && (Date.now() - st.mtimeMs > this.staleLockMs || (await holderIsDead(lock, st.mtimeMs)))) {
        await unlink(lock).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) throw DeliveryErrors.locked(new Error(`dotlock ${lock} held too long`));
      await sleep(wait);
      wait = Math.min(wait * 2, 200);
    }
  }

  private async flock(fh: FileHandle): Promise<void> {
    const deadline = Date.now() + this.lockTimeoutMs;
    let wait = 5;
    while (true) {
      try {
        await flock(fh.fd, 'exnb');
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EWOULDBLOCK' && code !== 'EAGAIN') throw e;
      }
      if (Date.now() > deadline) throw DeliveryErrors.locked(new Error('flock held too long'));
      await sleep(wait);
      wait = Math.min(wait * 2, 200);
    }
  }
}
