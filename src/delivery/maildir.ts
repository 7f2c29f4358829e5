// Maildir delivery (https://cr.yp.to/proto/maildir.html) with Maildir++ sub-folders (Courier:
// ".Name", ".A.B" for nesting, each holding an empty `maildirfolder` file).
//
// A delivery writes tmp/<name>, fdatasyncs it, renames it into new/<name> and fsyncs new/ (one
// sequence on the I/O pool, durable-file.ts). Only then does it count as delivered.
// When only that fsync fails, after the rename, the copy is in new/ and may already be read; it
// is not taken back here (the error names it: the queue takes it back only when the client is
// then told 4xx, queue/manager.ts). new/ is fsynced once more when opening it was what failed (io-pool.ts
// `folderSyncRetryable`), and if that fails too, or an fsync(2) itself failed, the
// delivery throws a temporary DeliveryError with `stored` set: the caller must retry under the
// same queue id with `checkExisting` (the queue does; LMTP answers 250 and keeps the recipient in
// the spool rather than a 4xx that would bring the message back under another id). A copy found
// by such a retry counts as delivered only once its folder is fsynced.
//
// File names are unique as the spec asks, and also DETERMINISTIC per (queue id, recipient,
// folder), so that a retry after a crash can see that it already delivered:
//   <sec>.M<usec>Q<queue id>R<key>.<host>,S=<size>
// <sec>/<usec> come from the message's acceptance time, <key> is a hash of (user, folder)
// (local.ts), <host> is the hostname with '/', ':' and ',' written as \057, \072 and \054, and
// S= is the file size (Maildir++ / Dovecot). A client that reads the message moves it to cur/
// and appends ":2,<flags>" (and Dovecot may add ",W=" fields); a retry therefore looks for the
// prefix "<sec>.M<usec>Q<queue id>R<key>." in new/ and cur/.
//
// Flags (Sieve imap4flags at delivery, RFC 5232): a message stored with flags goes straight to
// cur/ as "<name>:2,<letters>" (the Maildir "info" part, letters in ASCII order): S seen,
// R replied (\Answered), F flagged, T trashed (\Deleted), D draft; keywords are the letters
// a-z, numbered in the folder's `dovecot-keywords` file ("<n> <keyword>" per line, Dovecot's
// format: letter 'a'+n). At most 26 keywords per folder; more are dropped (logged by the caller).
//
// Config keys: `mailbox.path` (resolved by local.ts), `hostname`.
import { readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { renamedButNotSynced, writeThenRename } from '../queue/durable-file.js';
import { dirname, join } from 'node:path';
import type { DirSyncer } from '../queue/dir-sync.js';
import { FolderNameError, maildirPlusName, type FolderNames } from './folder.js';
import { DeliveryErrors, fromFsError } from './errors.js';
import { mkdirsDurable } from './fs-util.js';

export interface MaildirNameParts {
  qid: string;
  /** Milliseconds since the epoch the message was accepted. */
  receivedAt: number;
  /** Filename-safe hash of (recipient, folder). */
  key: string;
  hostname: string;
}

export function maildirUniquePrefix(p: Omit<MaildirNameParts, 'hostname'>): string {
  const sec = Math.floor(p.receivedAt / 1000);
  const usec = (p.receivedAt % 1000) * 1000;
  return `${sec}.M${usec}Q${p.qid}R${p.key}.`;
}

/** Stands for the size in a name until the I/O thread knows it (io-pool.ts; never in a path). */
const SIZE_LATER = '\0';

/**
 * What a delivery writes: the exact bytes, or trace headers plus a message with CRLF line ends
 * that the I/O thread writes with LF ends (trace.ts), off the main thread.
 */
export type MailboxContent = Buffer | { head: Buffer; crlfMessage: Buffer };

export function maildirName(p: MaildirNameParts, size: number | typeof SIZE_LATER): string {
  const host = p.hostname.replace(/\//g, '\\057').replace(/:/g, '\\072').replace(/,/g, '\\054');
  return `${maildirUniquePrefix(p)}${host},S=${size}`;
}

export interface MaildirDeliveryResult {
  /** Full path of the message file (in new/, or wherever the earlier copy was found). */
  path: string;
  /** True when a retry found the message already delivered and wrote nothing. */
  duplicate: boolean;
}

export class MaildirWriter {
  /** Folders known to exist with cur/ new/ tmp/, to skip mkdir on the hot path. */
  private readonly known = new Set<string>();

  constructor(
    private readonly syncer: DirSyncer,
    private readonly folderNames: FolderNames = 'utf7',
  ) {}

  /**
   * writeThenRename into `folder` (new/ or cur/). A copy renamed into place whose folder fsync
   * failed (twice, when it may be tried again) throws DeliveryErrors.notSynced (see the header).
   */
  private async writeInto(folder: string, tmp: string, final: string, bytes: Uint8Array[], lf: boolean): Promise<string> {
    try {
      return await writeThenRename(tmp, final, bytes, 0o666, folder, { lf, syncer: this.syncer });
    } catch (e) {
      throw renamedButNotSynced(e) ? DeliveryErrors.notSynced(e, [{ kind: 'maildir', file: e.target }]) : e;
    }
  }

  /** fsyncs the folder of a copy already in place; DeliveryErrors.notSynced when it fails. */
  private async syncStored(folder: string): Promise<void> {
    try {
      await this.syncer.sync(folder);
    } catch (e) {
      throw DeliveryErrors.notSynced(e);
    }
  }

  /** The folder's directory under the Maildir root; throws DeliveryError for a bad name. */
  folderDir(root: string, folder: string | undefined): string {
    try {
      const sub = maildirPlusName(folder, this.folderNames);
      return sub ? join(root, sub) : root;
    } catch (e) {
      if (e instanceof FolderNameError) throw DeliveryErrors.badFolder(e);
      throw e;
    }
  }

  /** Creates the Maildir (and the Maildir++ folder) when missing. */
  async ensure(root: string, dir: string): Promise<void> {
    if (this.known.has(dir)) return;
    const leaves = [join(root, 'cur'), join(root, 'new'), join(root, 'tmp')];
    if (dir !== root) leaves.push(join(dir, 'cur'), join(dir, 'new'), join(dir, 'tmp'));
    await mkdirsDurable(leaves, this.syncer);
    if (dir !== root) await writeFile(join(dir, 'maildirfolder'), '', { flag: 'a' });
    if (this.known.size > 10_000) this.known.clear();
    this.known.add(dir);
  }

  /** Looks for an earlier delivery of this (qid, key) in new/ and cur/ of `dir` (`size` known: its exact name first). */
  async findExisting(dir: string, parts: MaildirNameParts, size?: number): Promise<string | null> {
    if (size !== undefined) {
      const exact = join(dir, 'new', maildirName(parts, size));
      if (await stat(exact).then(() => true, () => false)) return exact;
    }
    const prefix = maildirUniquePrefix(parts);
    for (const sub of ['new', 'cur']) {
      const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
      const hit = names.find((n) => n.startsWith(prefix));
      if (hit) return join(dir, sub, hit);
    }
    return null;
  }

  /**
   * Delivers `bytes` into folder `folder` (undefined: INBOX) of the Maildir at `root`.
   * `checkExisting`: this may be a retry, look for an earlier copy first (costs a readdir).
   * Throws DeliveryError.
   */
  async deliver(root: string, folder: string | undefined, parts: MaildirNameParts, content: MailboxContent, checkExisting: boolean, flags = ''): Promise<MaildirDeliveryResult> {
    const dir = this.folderDir(root, folder);
    const lf = !Buffer.isBuffer(content);
    const bytes = lf ? [content.head, content.crlfMessage] : [content];
    try {
      await this.ensure(root, dir);
      if (checkExisting) {
        const found = await this.findExisting(dir, parts, lf ? undefined : content.length);
        if (found) {
          // The earlier attempt may have failed right after its rename, before its folder fsync.
          await this.syncStored(dirname(found));
          return { path: found, duplicate: true };
        }
      }
      const name = maildirName(parts, lf ? SIZE_LATER : content.length);
      const tmp = join(dir, 'tmp', name);
      // With flags the message is no longer "new" (Maildir spec: cur/ holds messages with info).
      const sub = flags ? 'cur' : 'new';
      const final = join(dir, sub, flags ? `${name}:2,${flags}` : name);
      // 'w': a leftover tmp file of the same name can only be our own interrupted attempt.
      let written: string;
      try {
        written = await this.writeInto(join(dir, sub), tmp, final, bytes, lf);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        // The Maildir was removed under us: forget it, create it again.
        this.known.delete(dir);
        await this.ensure(root, dir);
        written = await this.writeInto(join(dir, sub), tmp, final, bytes, lf);
      }
      return { path: written, duplicate: false };
    } catch (e) {
      throw fromFsError(e);
    }
  }
}

/** System flags (RFC 3501 §2.3.2) and their Maildir info letters. \\Recent cannot be stored. */
const SYSTEM_LETTERS: Record<string, string> = { '\\seen': 'S', '\\answered': 'R', '\\flagged': 'F', '\\deleted': 'T', '\\draft': 'D' };

/** Splits IMAP flags into Maildir system letters and keywords (unknown system flags are dropped). */
export function splitFlags(flags: string[]): { letters: string; keywords: string[] } {
  const letters = new Set<string>();
  const keywords: string[] = [];
  for (const f of flags) {
    if (f.startsWith('\\')) {
      const l = SYSTEM_LETTERS[f.toLowerCase()];
      if (l) letters.add(l);
    } else if (/^[\x21-\x7e]+$/.test(f) && !/[(){%*"\\\]]/.test(f) && !keywords.some((k) => k.toLowerCase() === f.toLowerCase())) {
      keywords.push(f); // RFC 3501 atom
    }
  }
  return { letters: [...letters].join(''), keywords };
}

const keywordLocks = new Map<string, Promise<unknown>>();

/**
 * The letters of `keywords` in the folder's dovecot-keywords file, adding the missing ones
 * (written to a temporary file, then renamed). Serialised per folder within this process.
 */
export async function keywordLetters(dir: string, keywords: string[]): Promise<{ letters: string; dropped: string[] }> {
  if (keywords.length === 0) return { letters: '', dropped: [] };
  const file = join(dir, 'dovecot-keywords');
  const prev = keywordLocks.get(file) ?? Promise.resolve();
  const work = prev.catch(() => undefined).then(async () => {
    const text = await readFile(file, 'utf8').catch(() => '');
    const byIndex = new Map<number, string>();
    for (const line of text.split('\n')) {
      const m = /^(\d+) (.+)$/.exec(line);
      if (m && Number(m[1]) < 26) byIndex.set(Number(m[1]), m[2]!);
    }
    const letters: string[] = [];
    const dropped: string[] = [];
    let changed = false;
    for (const k of keywords) {
      let idx = [...byIndex].find(([, v]) => v.toLowerCase() === k.toLowerCase())?.[0];
      if (idx === undefined) {
        idx = [...Array(26).keys()].find((i) => !byIndex.has(i));
        if (idx === undefined) {
          dropped.push(k);
          continue;
        }
        byIndex.set(idx, k);
        changed = true;
      }
      letters.push(String.fromCharCode(97 + idx));
    }
    if (changed) {
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, [...byIndex].sort((a, b) => a[0] - b[0]).map(([i, v]) => `${i} ${v}\n`).join(''));
      await rename(tmp, file);
    }
    return { letters: letters.sort().join(''), dropped };
  });
  keywordLocks.set(file, work);
  try {
    return await work;
  } finally {
    if (keywordLocks.get(file) === work) keywordLocks.delete(file);
  }
}

/** Maildir info letters in ASCII order (upper-case system flags sort before keyword letters). */
export function infoLetters(system: string, keywords: string): string {
  return [...new Set([...system, ...keywords])].sort().join('');
}
