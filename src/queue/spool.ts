// The on-disk spool under `<data_dir>/spool/`: the durability point behind "250 queued as <id>".
//
// Layout (Postfix-style named directories, one file system so rename(2) is atomic):
//   spool/tmp/            files being written; anything found here at start is removed
//   spool/q/<id>          one committed message: envelope and message in ONE file
//   spool/q/<id>.state    per-recipient delivery state (written only when an entry outlives its
//                         first delivery round: deferred, held for relay, partly done)
//   spool/q/<id>.<k>.intent  a delivery's intent record (mbox: size before the append). One
//                         without a message file is an ORPHAN, left by a crash: in an LMTP
//                         delivery straight into an mbox (it has no message file and removes its
//                         records once the outcome is final), or inside `remove`. `list` keeps orphans;
//                         `scan` hands them to the queue, which checks and removes each.
//
// Message file format (all lengths in bytes):
//   "POSTERN-SPOOL 1 <n>\n" <n bytes of envelope JSON> "\n" <message bytes, exactly as accepted>
// The file only appears under q/ by rename after its bytes are fdatasync'ed, so a file in q/ is
// always complete: the rename IS the commit marker. `accept` resolves after the fsync of q/.
//
// fsync strategy: fdatasync(2) for the new file (a new file's size is metadata fdatasync covers),
// then an fsync of q/ after the rename, both in one sequence on the I/O pool (io-pool.ts).
// When only that fsync of q/ fails, the file is in q/ already: q/ is fsynced once more when the
// failure was in opening it (EMFILE may pass; an fsync(2) error may not be trusted to, see
// io-pool.ts `folderSyncRetryable`), and if that fails too, or was not tried:
//   - a new message is taken back (unlinked) before `accept` rejects: the client hears 4xx and
//     sends it again, so nothing may be left that this queue or the next start would deliver
//     too. Only a crash before the unlink reaches the disk can bring it back. If it cannot be
//     unlinked either, the commit stands and `accept` resolves (logged): it is in q/ and will be
//     delivered, and a 4xx would only make the client send a second copy;
//   - a state or intent record has replaced the one before it, which is gone: the write is
//     reported failed and left in place; its caller keeps what it wrote and writes it again.
// Removal (unlink) is fsynced only when the caller asks (a relayed message must not be sent
// again); otherwise the next commit's fsync of q/ persists it, and a removal lost to a crash only
// makes recovery retry deliveries that are idempotent anyway.
//
// Config keys: `data_dir`.
import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Envelope } from './envelope.js';
import { renamedButNotSynced, writeThenRename, type RenamedButNotSynced } from './durable-file.js';
import { ioPool } from './io-pool.js';
import { logEvent, silentLogger } from '../log/logger.js';
import { DirSyncer } from './dir-sync.js';
import { UnlinkBatcher } from './unlink-batch.js';
import { isQueueId } from './queue-id.js';

const MAGIC = 'POSTERN-SPOOL 1 ';

/** An intent record left without its message file, and its contents (null when damaged). */
export interface OrphanIntent {
  id: string;
  key: string;
  record: unknown;
}

export class SpoolFormatError extends Error {}

export interface SpooledMessage {
  id: string;
  envelope: Envelope;
  message: Buffer;
}

export class Spool {
  readonly root: string;
  readonly tmpDir: string;
  readonly queueDir: string;
  private tmpSeq = 0;
  private readonly removals: UnlinkBatcher;
  /** How many removal batches fsynced q/ (tests: a durable removal is really fsynced). */
  get removalSyncs(): number {
    return this.removals.syncs;
  }

  constructor(
    dataDir: string,
    readonly syncer: DirSyncer = new DirSyncer(),
    private readonly log: Logger = silentLogger(),
  ) {
    this.root = join(dataDir, 'spool');
    this.tmpDir = join(this.root, 'tmp');
    this.queueDir = join(this.root, 'q');
    this.removals = new UnlinkBatcher(this.queueDir);
  }

  /** Creates the folders and removes leftovers of writes a crash interrupted. Call before use. */
  async init(): Promise<{ removedTemp: number }> {
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.queueDir, { recursive: true });
    // New folders must survive a crash too before anything is committed into them.
    await Promise.all([this.syncer.sync(this.root), this.syncer.sync(dirname(this.root))]);
    let removedTemp = 0;
    for (const name of await readdir(this.tmpDir)) {
      await unlink(join(this.tmpDir, name)).catch(() => undefined);
      removedTemp++;
    }
    return { removedTemp };
  }

  /**
   * Writes message and envelope; resolves only when both are durable under q/ (or, rarely, when
   * they are in q/ and can be neither fsynced nor removed: see the header). A rejection leaves
   * nothing in q/.
   */
  async accept(id: string, envelope: Envelope, message: Buffer): Promise<void> {
    checkId(id);
    await this.commit(id, spoolFileParts(envelope, message), { takeBack: true });
  }

  async read(id: string): Promise<SpooledMessage> {
    checkId(id);
    const buf = await readFile(join(this.queueDir, id));
    return { id, ...parseSpoolFile(buf) };
  }

  /** Replaces the state record of an entry atomically and durably. */
  async writeState(id: string, state: unknown): Promise<void> {
    checkId(id);
    await this.commit(`${id}.state`, [Buffer.from(JSON.stringify(state), 'utf8')]);
  }

  async readState<T>(id: string): Promise<T | null> {
    checkId(id);
    try {
      return JSON.parse(await readFile(join(this.queueDir, `${id}.state`), 'utf8')) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** An intent record for one delivery of an entry (key: filename-safe). Durable on return. */
  async writeIntent(id: string, key: string, data: unknown): Promise<void> {
    checkId(id);
    checkKey(key);
    this.noteIntent(id, key);
    await this.commit(`${id}.${key}.intent`, [Buffer.from(JSON.stringify(data), 'utf8')]);
  }

  /**
   * Removes one intent record (a missing one is no error). With `durable` the removal survives a
   * crash on return; otherwise the next commit's fsync of q/ persists it.
   */
  async removeIntent(id: string, key: string, opts: { durable?: boolean } = {}): Promise<void> {
    checkId(id);
    checkKey(key);
    await this.removals.remove([join(this.queueDir, `${id}.${key}.intent`)], opts.durable === true);
    const keys = this.intentKeys.get(id);
    keys?.delete(key);
    if (keys?.size === 0) this.intentKeys.delete(id);
  }

  async readIntent<T>(id: string, key: string): Promise<T | null> {
    checkId(id);
    checkKey(key);
    try {
      return JSON.parse(await readFile(join(this.queueDir, `${id}.${key}.intent`), 'utf8')) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /**
   * Removes an entry: the message first (from then on recovery ignores the rest), then its state
   * and intents. With `durable` the removal survives a crash on return (q/ fsynced); otherwise
   * the next commit's fsync persists it (see the header). Removals go in batches (unlink-batch.ts).
   */
  async remove(id: string, opts: { hasState?: boolean; durable?: boolean } = {}): Promise<void> {
    checkId(id);
    const paths = [join(this.queueDir, id)];
    // `hasState: false` (the caller knows none was written) saves a syscall per message.
    if (opts.hasState !== false) paths.push(join(this.queueDir, `${id}.state`));
    await this.removals.remove(paths, opts.durable === true);
    // Intents exist only for mbox deliveries; their keys are known (written here or found by `list`).
    const keys = this.intentKeys.get(id);
    this.intentKeys.delete(id);
    for (const key of keys ?? []) await unlink(join(this.queueDir, `${id}.${key}.intent`)).catch(ignoreEnoent);
  }

  /**
   * Committed entry ids, oldest first. Side files whose message is gone (a crash inside
   * `remove`) are deleted, except intent records: those are orphans (`scan`).
   */
  async list(): Promise<string[]> {
    return (await this.scan()).ids;
  }

  /**
   * The committed entry ids (as `list`) and the intent records whose message file is missing
   * (see the header), with their contents (null when damaged), from one reading of q/ (a start
   * after an outage may find a large spool, and reads it once). A file under q/ named like an
   * intent but not one of a valid id is deleted.
   */
  async scan(): Promise<{ ids: string[]; orphans: OrphanIntent[] }> {
    // Sorted: queue ids sort by acceptance time, so entries come oldest first, and one message's
    // records, and the records of one mailbox, in the order they were written.
    const names = (await readdir(this.queueDir)).sort();
    const ids = names.filter(isQueueId);
    const committed = new Set(ids);
    const orphans: OrphanIntent[] = [];
    for (const name of names) {
      if (isQueueId(name)) continue;
      if (!name.endsWith('.intent')) {
        const [owner = ''] = name.split('.');
        if (!committed.has(owner)) await unlink(join(this.queueDir, name)).catch(ignoreEnoent);
        continue;
      }
      const [id = '', key = ''] = name.slice(0, -'.intent'.length).split('.');
      if (committed.has(id)) {
        this.noteIntent(id, key);
        continue;
      }
      if (!isQueueId(id) || !isIntentKey(key) || name !== `${id}.${key}.intent`) {
        await unlink(join(this.queueDir, name)).catch(ignoreEnoent);
        continue;
      }
      let text: string;
      try {
        text = await readFile(join(this.queueDir, name), 'utf8');
      } catch (e) {
        ignoreEnoent(e);
        continue;
      }
      orphans.push({ id, key, record: parseJson(text) });
    }
    return { ids, orphans };
  }

  /** Intent keys per entry id: written by us, or found by `list`. */
  private readonly intentKeys = new Map<string, Set<string>>();

  private noteIntent(id: string, key: string): void {
    let keys = this.intentKeys.get(id);
    if (!keys) this.intentKeys.set(id, (keys = new Set()));
    keys.add(key);
  }

  /** True when intent records exist for the entry (known after `list`, or written by us). */
  hasIntents(id: string): boolean {
    return this.intentKeys.has(id);
  }

  /**
   * Writes `name` into q/ through tmp/, durably. `takeBack`: a new entry, unlinked again when
   * q/ cannot be fsynced after the rename (the header says why, and what the others do).
   */
  private async commit(name: string, parts: Buffer[], opts: { takeBack?: boolean } = {}): Promise<void> {
    // A per-process sequence keeps two writers of the same state file apart in tmp/.
    const tmp = join(this.tmpDir, `${name}.${process.pid}.${this.tmpSeq++}`);
    try {
      await writeThenRename(tmp, join(this.queueDir, name), parts, 0o666, this.queueDir, { syncer: this.syncer });
    } catch (e) {
      if (!renamedButNotSynced(e) || !opts.takeBack) throw e;
      await this.takeBack(name, e);
    }
  }

  /**
   * Unlinks a new entry whose name in q/ is not durable, then rejects with `cause`. Resolves
   * instead when the file is still there afterwards: the commit stands (see the header).
   */
  private async takeBack(name: string, cause: RenamedButNotSynced): Promise<void> {
    const path = join(this.queueDir, name);
    await ioPool().unlinkAll([[path]]).catch(() => undefined);
    // Whatever the unlink answered, the file's presence decides (an unknown answer counts as there).
    const stands = await stat(path).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT');
    if (!stands) throw Object.assign(new Error(`${cause.message} (the new spool entry was taken back)`), { code: cause.code, cause });
    logEvent(this.log, 'error', 'spool.error', { qid: name, err: String(cause) }, 'q/ could not be fsynced after a commit, nor the entry removed: it stays queued');
  }

  async close(): Promise<void> {
    await this.syncer.close();
  }
}

const NL = Buffer.from('\n');

/** The parsed value, or null for damaged text (records are renamed in whole; damage is by hand). */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function ignoreEnoent(e: unknown): void {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
}

function checkId(id: string): void {
  if (!isQueueId(id)) throw new Error(`invalid queue id: ${JSON.stringify(id)}`);
}

function isIntentKey(key: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(key);
}

function checkKey(key: string): void {
  if (!isIntentKey(key)) throw new Error(`invalid intent key: ${JSON.stringify(key)}`);
}

/** The bytes of a spool file, as parts for writev (also the maildrop's format). */
export function spoolFileParts(envelope: Envelope, message: Buffer): Buffer[] {
  const json = Buffer.from(JSON.stringify(envelope), 'utf8');
  const head = Buffer.from(`${MAGIC}${json.length}\n`, 'latin1');
  return [head, json, NL, message];
}

export function parseSpoolFile(buf: Buffer): { envelope: Envelope; message: Buffer } {
  const nl = buf.indexOf(10);
  const head = nl > 0 ? buf.subarray(0, nl).toString('latin1') : '';
  if (!head.startsWith(MAGIC)) throw new SpoolFormatError('not a spool file');
  const n = Number(head.slice(MAGIC.length));
  if (!Number.isSafeInteger(n) || n < 2 || nl + 1 + n + 1 > buf.length || buf[nl + 1 + n] !== 10) {
    throw new SpoolFormatError('bad envelope length');
  }
  const envelope = JSON.parse(buf.subarray(nl + 1, nl + 1 + n).toString('utf8')) as Envelope;
  return { envelope, message: buf.subarray(nl + 2 + n) };
}
