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
// Locking, in this order, released in reverse:
//   1. an in-process queue per file, shared by every MboxWriter of the process;
//   2. a dotlock "<mbox>.lock", created with O_EXCL, then our pid written into it. One older than
//      `staleLockMs`, one naming a pid that no longer runs on this host, or one still empty 10 s
//      after it was made, is taken as left by a dead process and removed, but only while it is
//      still the file that was judged (see unlinkIfUnchanged for the window that remains);
//   3. flock(2) LOCK_EX on the mbox;
//   4. an fcntl(2) F_WRLCK record lock over the whole mbox.
// Linux keeps flock and fcntl locks apart (neither blocks the other), and mail programs differ:
// Dovecot writes under dotlock + fcntl and reads under fcntl by default, Postfix local(8) on
// Linux and procmail/mutt use fcntl + dotlock, some readers flock only. Holding all three, we
// exclude (and wait for) each of them. Both kernel locks come from fs-ext (fcntl: F_SETLK over
// the whole file) and are polled without blocking, so no libuv worker thread waits on them;
// `lockTimeoutMs` bounds the whole wait, after which the delivery fails temporarily (4.2.0).
// An fcntl lock belongs to the process, not to a descriptor, and close(2) of ANY descriptor of
// the file drops it. So while it is held, the mbox is touched only through the one descriptor
// the locks were taken on (fstat, pread, pwrite, ftruncate, fdatasync: no second open, not even
// to stat or read it), and nothing else in this process opens mbox files (folderExists stats by
// path, which opens nothing). The queue of (1) keeps two appends of this process from holding
// it at once.
//
// Never a torn message: the append is written at the size found under the lock; if the write or
// the fdatasync fails, the file is truncated back to that size. A crash in the middle of a write
// is repaired on retry through the INTENT record (offset and length, written durably before the
// append, by the caller's intent store): if the file holds our exact entry at that offset, the
// delivery already happened; if it ends inside a prefix of our entry, it is truncated back to
// the offset and written again. An append no spool entry backs (LMTP's direct delivery) has no
// message to compare with: its record also names the file and keeps the entry's first bytes, and
// the queue checks it at start (mbox-intent.ts).
//
// Taking an entry back (`takeBack`): an LMTP recipient's entry is appended before its reply, and
// when that reply turns into 4xx (the rest could not be spooled) the client sends the message
// again, so the queue takes the entry back: it is cut off under the same locks, but only while
// the file still ends with exactly its bytes. An entry another one now follows stays.
//
// Sub-folders: "<mbox>.d/<A.B>" — a flat folder next to the INBOX file, one mbox file per folder,
// hierarchy segments joined by '.' (folder.ts).
//
// Config keys: `mailbox.format` (mbox), `mailbox.path`.
import { lstat, open, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { constants, lstatSync, unlinkSync, type BigIntStats } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DirSyncer } from '../queue/dir-sync.js';
import { DeliveryErrors, fromFsError } from './errors.js';
import { FolderNameError, folderDiskName, type FolderNames } from './folder.js';
import { mkdirsDurable } from './fs-util.js';
import type { StoredCopy } from './stored-copy.js';

const fsExt = createRequire(import.meta.url)('fs-ext') as {
  flock(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un', cb: (err: NodeJS.ErrnoException | null) => void): void;
  fcntl(fd: number, cmd: 'setlk', arg: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  constants: { F_WRLCK: number; F_UNLCK: number };
};

function flock(fd: number, flags: 'exnb' | 'un'): Promise<void> {
  return new Promise((resolve, reject) => fsExt.flock(fd, flags, (err) => (err ? reject(err) : resolve())));
}

/**
 * fcntl(2) F_SETLK over the whole file: fs-ext fills the struct flock with l_whence SEEK_SET,
 * l_start 0, l_len 0 (to the end, however far it grows) and the given l_type. Never waits. Only
 * the asynchronous form is usable: fs-ext's fcntlSync hands the lock type to fcntl where a
 * struct pointer belongs.
 */
function fcntlLock(fd: number, type: 'write' | 'unlock'): Promise<void> {
  const lType = type === 'write' ? fsExt.constants.F_WRLCK : fsExt.constants.F_UNLCK;
  return new Promise((resolve, reject) => fsExt.fcntl(fd, 'setlk', lType, (err) => (err ? reject(err) : resolve())));
}

/** What each non-blocking attempt fails with while another holder has the lock. */
const FLOCK_BUSY = ['EWOULDBLOCK', 'EAGAIN'];
/** POSIX lets F_SETLK report a conflicting lock as either. */
const FCNTL_BUSY = ['EAGAIN', 'EACCES'];

/**
 * Calls `attempt` until it takes the lock (true), backing off from 5 to 200 ms while another
 * holder has it (false); an error it throws is thrown. Past `deadline`: DeliveryErrors.locked.
 */
async function pollLock(what: string, deadline: number, attempt: () => Promise<boolean>): Promise<void> {
  let wait = 5;
  while (!(await attempt())) {
    if (Date.now() > deadline) throw DeliveryErrors.locked(new Error(`${what} held too long`));
    await sleep(wait);
    wait = Math.min(wait * 2, 200);
  }
}

/** A non-blocking lock call as a pollLock attempt: one of the `busy` errors means false. */
function unlessBusy(busy: string[], call: () => Promise<void>): () => Promise<boolean> {
  return async () => {
    try {
      await call();
      return true;
    } catch (e) {
      if (busy.includes((e as NodeJS.ErrnoException).code ?? '')) return false;
      throw e;
    }
  };
}

/**
 * Runs `fn` holding flock(2) and then the fcntl(2) write lock on `fh`, releasing them in reverse
 * on every path. The close of `fh` by the caller would drop both anyway; releasing them here
 * keeps the order explicit.
 */
async function withFileLocks<T>(fh: FileHandle, deadline: number, fn: () => Promise<T>): Promise<T> {
  await pollLock('flock', deadline, unlessBusy(FLOCK_BUSY, () => flock(fh.fd, 'exnb')));
  try {
    await pollLock('fcntl lock', deadline, unlessBusy(FCNTL_BUSY, () => fcntlLock(fh.fd, 'write')));
    try {
      return await fn();
    } finally {
      await fcntlLock(fh.fd, 'unlock').catch(() => undefined);
    }
  } finally {
    await flock(fh.fd, 'un').catch(() => undefined);
  }
}

/**
 * Appends in flight per mbox file, for every MboxWriter of this process: fcntl locks are the
 * process's, so two appends of it must never hold one at the same time (the second would get
 * it at once, and its close would drop the first one's).
 */
const fileQueues = new Map<string, Promise<unknown>>();

/** mbox files this process made whose folder fsync failed (their names may not be durable yet). */
const unsyncedFolders = new Set<string>();

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

/** Same file, unchanged: device, inode, size, modification and change times (ns). */
function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/**
 * Unlinks the dotlock `lock` only if it is still the file `judged` describes; true if it is gone
 * (removed here or by someone else). Two writers can judge one lock stale: the first removes it
 * and makes its own, and without this check the second would remove that fresh lock and make
 * another, so that both would hold "the" lock. The inode number alone is not enough, as a new
 * file may get the freed one; the times and size tell the two apart.
 * The stat and the unlink are made synchronously, back to back, so that no other work of this
 * process (or thread-pool queue) runs in between; this is the rare path of a dead holder. What
 * remains is the gap between those two system calls: another process that, within it, removes
 * the stale file and creates its own lock would still lose it. (rename(2) to a private name
 * before checking does not close the gap either: it would take the fresh lock away when it lost
 * the race, and putting it back can collide with a third writer.)
 */
function unlinkIfUnchanged(lock: string, judged: BigIntStats): boolean {
  try {
    if (!sameFile(lstatSync(lock, { bigint: true }), judged)) return false;
    unlinkSync(lock);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw e;
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
  /** `file`: the mbox the entry goes into (a standalone record names it). */
  put(intent: MboxIntent, file: string): Promise<void>;
}

export interface MboxOptions {
  /** Give up (temporary failure) after waiting this long for the locks, all of them together. */
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

/** True when the file's last byte (of `size`) is LF. */
async function endsInLf(fh: FileHandle, size: number): Promise<boolean> {
  const last = Buffer.alloc(1);
  const { bytesRead } = await fh.read(last, 0, 1, size - 1);
  return bytesRead === 1 && last[0] === 0x0a;
}

/** Writes all of `buf` at `position`, however many writes it takes. */
async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

export class MboxWriter {
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
    return this.withLockedFile(file, (fh) => this.append(file, fh, entry, opts));
  }

  /**
   * Runs `work` on mbox `file` (opened read-write, created when missing) under the same locks as
   * an append, after the appends to it queued before. `work` must do all its I/O on the mbox
   * through `fh`: closing any other descriptor of the file would drop the fcntl lock (header).
   * Throws DeliveryError.
   */
  withLockedFile<T>(file: string, work: (fh: FileHandle) => Promise<T>): Promise<T> {
    return this.queued(file, work, true);
  }

  /**
   * withLockedFile for a file that is only looked at or cut back: a missing file (or folder) is
   * not made, and gives null. Throws DeliveryError.
   */
  async withExistingFile<T>(file: string, work: (fh: FileHandle) => Promise<T>): Promise<T | null> {
    try {
      return await this.queued(file, work, false);
    } catch (e) {
      if (((e as Error).cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
      throw e;
    }
  }

  private async queued<T>(file: string, work: (fh: FileHandle) => Promise<T>, create: boolean): Promise<T> {
    // In-process serialisation per file: cheaper than everyone polling the dotlock, and
    // required by the fcntl lock (see fileQueues).
    const prev = fileQueues.get(file) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.locked(file, work, create));
    fileQueues.set(file, run);
    try {
      return await run;
    } finally {
      if (fileQueues.get(file) === run) fileQueues.delete(file);
    }
  }

  private async locked<T>(file: string, work: (fh: FileHandle) => Promise<T>, create: boolean): Promise<T> {
    try {
      if (create) await mkdirsDurable([dirname(file)], this.syncer);
      const deadline = Date.now() + this.lockTimeoutMs;
      const lock = `${file}.lock`;
      await this.dotlock(lock, deadline);
      try {
        // The one descriptor of the mbox: the work (append, repair) does all its I/O through it (see header).
        const fh = await open(file, constants.O_RDWR | (create ? constants.O_CREAT : 0), 0o600);
        try {
          return await withFileLocks(fh, deadline, () => work(fh));
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
          if (have === entry.length) {
            // An earlier attempt that made the file may have failed at its folder fsync.
            if (rec.offset === 0 || unsyncedFolders.has(file)) await this.syncFolderOf(file);
            return { path: file, duplicate: true, offset: rec.offset };
          }
          if (rec.offset + have === size) {
            // A crash tore our entry at the end of the file: cut it off and write it again.
            await fh.truncate(rec.offset);
            await fh.datasync();
            size = rec.offset;
          }
        }
      }
    }
    // On any failure the file goes back to this size, exactly: the evidence a torn entry's
    // check (here on retry, mbox-intent.ts at start) compares with must not change.
    const start = size;
    try {
      // A file that does not end in LF (a torn entry left by another program, or one of ours not
      // repaired yet) would glue our From_ line onto its last line, where no reader, and no
      // torn-entry check, could see it start a message: end that line first.
      if (size > 0 && !(await endsInLf(fh, size))) {
        await writeAll(fh, Buffer.from('\n'), size);
        size += 1;
      }
      if (opts.intent) await opts.intent.put({ offset: size, length: entry.length }, file);
      await writeAll(fh, entry, size);
      await fh.datasync();
    } catch (e) {
      // Never leave a torn message behind.
      await fh.truncate(start).catch(() => undefined);
      await fh.datasync().catch(() => undefined);
      throw e;
    }
    if (start === 0 || unsyncedFolders.has(file)) await this.syncFolderOf(file, [{ kind: 'mbox', file, offset: size, entry }]);
    return { path: file, duplicate: false, offset: size };
  }

  /**
   * Takes back an entry appended earlier (`entry` at `offset` of `file`) while it is still the
   * file's last: the file is cut back to `offset` and fdatasynced, under the same locks as an
   * append. Anything else is left alone: 'changed' when the file does not end with exactly
   * those bytes there (another entry follows, a mail reader rewrote the mailbox), 'absent' when
   * the file is gone. A file the entry created stays, empty. Throws DeliveryError.
   */
  async takeBack(file: string, offset: number, entry: Buffer): Promise<'removed' | 'changed' | 'absent'> {
    const r = await this.withExistingFile(file, async (fh) => {
      const size = (await fh.stat()).size;
      if (size !== offset + entry.length) return 'changed' as const;
      const have = Buffer.alloc(entry.length);
      const { bytesRead } = await fh.read(have, 0, entry.length, offset);
      if (bytesRead !== entry.length || !have.equals(entry)) return 'changed' as const;
      await fh.truncate(offset);
      await fh.datasync();
      return 'removed' as const;
    });
    return r ?? 'absent';
  }

  /**
   * fsyncs the folder of a file this process made (its name is durable only then). A failure is
   * `stored`: the entry is in the file for good, only its name may not be; a retry under the same
   * queue id finds it through its intent record and comes back here, and so does any append to
   * the file until a folder fsync has worked. `copies`: the entry just appended, if any.
   */
  private async syncFolderOf(file: string, copies: StoredCopy[] = []): Promise<void> {
    try {
      await this.syncer.sync(dirname(file));
      unsyncedFolders.delete(file);
    } catch (e) {
      unsyncedFolders.add(file);
      throw DeliveryErrors.notSynced(e, copies);
    }
  }

  private async dotlock(lock: string, deadline: number): Promise<void> {
    // A stale lock removed is tried again at once.
    await pollLock(`dotlock ${lock}`, deadline, async () => {
      while (!(await this.createDotlock(lock))) if (!(await this.removeIfStale(lock))) return false;
      return true;
    });
  }

  /** Creates the dotlock with our pid in it; false when one exists already. */
  private async createDotlock(lock: string): Promise<boolean> {
    let fh: FileHandle;
    try {
      fh = await open(lock, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
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
    return true;
  }

  /**
   * Removes the dotlock if it is stale (see the header). True when it is gone, so that creating
   * it may work now; false to wait.
   */
  private async removeIfStale(lock: string): Promise<boolean> {
    // lstat: the name itself is the lock, whatever it is (a dangling symlink exists too).
    const judged = await lstat(lock, { bigint: true }).catch((e: NodeJS.ErrnoException) => e);
    // Gone already: try to create it at once. Another error: wait, as for a live holder.
    if (judged instanceof Error) return judged.code === 'ENOENT';
    const mtimeMs = Number(judged.mtimeMs);
    const stale = Date.now() - mtimeMs > this.staleLockMs || (await holderIsDead(lock, mtimeMs));
    return stale && unlinkIfUnchanged(lock, judged);
  }
}
