// Local delivery of one message to one local user's mailbox folder: picks the mailbox path from
// the `mailbox.path` template, adds the trace headers (trace.ts) and writes Maildir or mbox.
// Per-user Sieve (sieve.ts) runs first for a plain INBOX delivery when the queue gave us a
// store: the user's active script turns the one delivery into zero or more stored copies
// (folders, with flags as Maildir info letters), redirects, a vacation reply or a refusal.
// Flags are kept in Maildir only (an mbox copy is stored without them).
//
// Idempotence per (queue id, user, folder): the Maildir file name and the mbox intent key are
// derived from `targetKey(user, folder)`, so a retry with `checkExisting` finds an earlier copy
// instead of storing a second one (maildir.ts, mbox.ts). A `standalone` intent store backs a
// delivery with no spool message file (LMTP): its mbox records carry the file and the entry's
// first bytes, so the queue can check them alone after a crash (mbox-intent.ts). Records are
// never removed here: the queue removes them once the recipient's outcome is final, and keeps
// them as the spool entry's intents when a store of the plan must be retried.
// A plan's store that fails after an earlier one stored its copy fails as `stored`: the retry
// must run under the same queue id, where it finds the earlier copies. Results and errors name
// the copies (`copies`, stored-copy.ts), for a caller that has to take them back.
//
// Path template: `{data_dir}` is the data folder; `{user}` the full address, `{local}` its local
// part, `{domain}` its domain, each made safe as ONE path segment (bytes outside
// [A-Za-z0-9._+=@-] and a leading '.' become %XX, so "../x" or "a/b" cannot leave the tree).
// A relative result is taken relative to the config file's folder.
//
// Config keys: `mailbox.format`, `mailbox.path`, `mailbox.folder_names`, `data_dir`, `hostname`, `sieve`.
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Store } from '../store/store.js';
import { sieveSchema, type SieveConfig } from '../sieve/config.js';
import type { DirSyncer } from '../queue/dir-sync.js';
import { parseAddress } from '../address/address.js';
import { deliveredBytes, traceHeaders } from './trace.js';
import { infoLetters, keywordLetters, MaildirWriter, splitFlags } from './maildir.js';
import { UserSieve, type SieveStore, type Submit } from './sieve.js';
import { MboxWriter, mboxEntry, type MboxIntent, type MboxIntentStore, type MboxOptions } from './mbox.js';
import { standaloneIntent } from './mbox-intent.js';
import { folderSegments } from './folder.js';
import { DeliveryError, DeliveryErrors, fromFsError } from './errors.js';
import type { StoredCopy } from './stored-copy.js';

export type LocalDeliveryConfig = Pick<Config, 'mailbox' | 'data_dir' | 'hostname'> & { baseDir?: string; sieve?: SieveConfig };

/** What per-user Sieve needs; without a store no script runs. */
export interface LocalDeliveryServices {
  store?: Store;
  /** Queues a message we make (Sieve redirect, vacation reply). */
  submit?: Submit;
  log?: Logger;
}

/** Durable per-delivery records kept by the queue (spool intents), keyed by target key. */
export interface IntentStore {
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<void>;
  /**
   * Set when no spool message file backs the delivery (LMTP, before its reply): records are
   * then standalone (see the header); the queue removes them.
   */
  standalone?: boolean;
}

export interface LocalDeliveryRequest {
  qid: string;
  /** Envelope sender ('' for <>). */
  sender: string;
  receivedAt: number;
  /** Canonical address of the local user. */
  user: string;
  /** The envelope recipient as given (Sieve's envelope "to"); default: `user`. */
  rcpt?: string;
  /** Folder asked for (quarantine, fileinto); INBOX when absent. */
  folder?: string;
  /** The spooled message bytes. */
  message: Buffer;
  /** Set on every attempt that may follow an earlier one (recovery, retry). */
  checkExisting: boolean;
  /** Where mbox intents go; without it an mbox append cannot be checked after a crash. */
  intents?: IntentStore | null;
}

export interface LocalDeliveryResult {
  /** "maildir:/path/to/file" or "mbox:/path/to/mbox". */
  destination: string;
  duplicate: boolean;
  /**
   * The copies this delivery stored, or found stored by an earlier attempt under the same queue
   * id (`duplicate`); none for a plan storing nothing.
   */
  copies: StoredCopy[];
}

/** One delivery's view of the queue's intent records; standalone ones when the store asks for them. */
function mboxIntentStore(intents: IntentStore, key: string, entry: Buffer): MboxIntentStore {
  return {
    get: async () => (await intents.get(key)) as MboxIntent | null,
    put: (v, file) => intents.put(key, intents.standalone ? standaloneIntent(file, entry, v) : v),
  };
}

/** One path segment made safe (see the header). */
export function safeSegment(s: string): string {
  if (s === '') return '_';
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._+=@-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out.startsWith('.') ? `%2E${out.slice(1)}` : out;
}

/** Filename-safe key of a (user, folder) pair, lower-case hex. */
export function targetKey(user: string, folder: string | undefined): string {
  let segs: string[];
  try {
    segs = folderSegments(folder);
  } catch {
    segs = [folder ?? ''];
  }
  return createHash('sha256').update(`${user.toLowerCase()}\0${segs.join('/')}`).digest('hex').slice(0, 16);
}

export class LocalDelivery {
  readonly maildir: MaildirWriter;
  readonly mbox: MboxWriter;
  private readonly sieve: UserSieve | null;

  constructor(
    private readonly config: LocalDeliveryConfig,
    syncer: DirSyncer,
    mboxOptions: MboxOptions = {},
    services: LocalDeliveryServices = {},
  ) {
    this.maildir = new MaildirWriter(syncer, config.mailbox.folder_names);
    this.mbox = new MboxWriter(syncer, { folderNames: config.mailbox.folder_names, ...mboxOptions });
    this.sieve = services.store
      ? new UserSieve({ store: services.store, submit: services.submit, log: services.log, sieve: config.sieve ?? sieveSchema.parse({}), hostname: config.hostname })
      : null;
  }

  /** RFC 5490 mailboxexists: INBOX, or a Maildir++ folder / mbox folder file that exists. */
  async folderExists(user: string, folder: string): Promise<boolean> {
    if (/^inbox$/i.test(folder)) return true;
    const path = this.mailboxPath(user);
    try {
      const p = this.config.mailbox.format === 'mbox' ? this.mbox.folderPath(path, folder) : this.maildir.folderDir(path, folder);
      return await stat(p).then(() => true, () => false);
    } catch {
      return false; // not a valid folder name
    }
  }

  /** True when `folder` maps to a name on disk for this user's mailbox format. */
  folderValid(user: string, folder: string): boolean {
    try {
      const path = this.mailboxPath(user);
      if (this.config.mailbox.format === 'mbox') this.mbox.folderPath(path, folder);
      else this.maildir.folderDir(path, folder);
      return true;
    } catch {
      return false;
    }
  }

  /** The INBOX path of a user (a Maildir folder or an mbox file). */
  mailboxPath(user: string): string {
    let local: string;
    let domain: string;
    try {
      ({ local, domain } = parseAddress(user));
    } catch {
      throw DeliveryErrors.unknownUser();
    }
    const p = this.config.mailbox.path.replace(/\{(data_dir|user|local|domain)\}/g, (_m, k: string) => {
      if (k === 'data_dir') return this.config.data_dir;
      if (k === 'user') return safeSegment(`${local}@${domain}`);
      if (k === 'local') return safeSegment(local);
      return safeSegment(domain);
    });
    return isAbsolute(p) ? p : resolve(this.config.baseDir ?? this.config.data_dir, p);
  }

  /** Throws DeliveryError (a Sieve reject is a permanent 550 5.7.1). */
  async deliver(req: LocalDeliveryRequest): Promise<LocalDeliveryResult> {
    if (this.sieve && req.folder === undefined) {
      const plan = await this.sieve.plan({
        qid: req.qid,
        sender: req.sender,
        user: req.user,
        rcpt: req.rcpt ?? req.user,
        message: req.message,
        mailboxExists: (f) => this.folderExists(req.user, f),
        folderValid: (f) => this.folderValid(req.user, f),
      });
      if (plan) {
        const results: LocalDeliveryResult[] = [];
        for (const s of plan.stores) {
          try {
            results.push(await this.store({ ...req, message: plan.message }, s));
          } catch (e) {
            if (results.length === 0) throw e;
            // Copies are in place already: see the header. They go with the error.
            const d = e instanceof DeliveryError ? e : DeliveryErrors.localError(e);
            throw new DeliveryError(d.temporary, d.code, d.enhanced, d.text, { cause: d.cause, stored: true, copies: [...results.flatMap((r) => r.copies), ...d.copies] });
          }
        }
        if (results.length === 0) return { destination: `sieve:${plan.summary}`, duplicate: false, copies: [] };
        return { destination: results.map((r) => r.destination).join(' '), duplicate: results.every((r) => r.duplicate), copies: results.flatMap((r) => r.copies) };
      }
    }
    return this.store(req, { ...(req.folder !== undefined ? { folder: req.folder } : {}), flags: [], create: true });
  }

  /** One stored copy into `s.folder` with its flags (Maildir info letters). */
  private async store(req: LocalDeliveryRequest, s: SieveStore): Promise<LocalDeliveryResult> {
    req = { ...req, folder: s.folder };
    const path = this.mailboxPath(req.user);
    const key = targetKey(req.user, req.folder);
    if (this.config.mailbox.format === 'mbox') {
      const entry = mboxEntry(req.sender, req.receivedAt, deliveredBytes(req.sender, req.user, req.message));
      const intents = req.intents;
      const r = await this.mbox.deliver(path, req.folder, entry, {
        checkExisting: req.checkExisting,
        intent: intents ? mboxIntentStore(intents, key, entry) : undefined,
      });
      return { destination: `mbox:${r.path}`, duplicate: r.duplicate, copies: [{ kind: 'mbox', file: r.path, offset: r.offset, entry, ...found(r.duplicate) }] };
    }
    const parts = { qid: req.qid, receivedAt: req.receivedAt, key, hostname: this.config.hostname };
    let info = '';
    if (s.flags.length > 0) {
      const { letters, keywords } = splitFlags(s.flags);
      let kw = '';
      if (keywords.length > 0) {
        const dir = this.maildir.folderDir(path, req.folder);
        try {
          await this.maildir.ensure(path, dir);
          kw = (await keywordLetters(dir, keywords)).letters;
        } catch (e) {
          throw fromFsError(e);
        }
      }
      info = infoLetters(letters, kw);
    }
    // The trace headers, then the message: the I/O thread writes its CRLFs as LF (trace.ts).
    const content = { head: Buffer.from(traceHeaders(req.sender, req.user), 'utf8'), crlfMessage: req.message };
    const r = await this.maildir.deliver(path, req.folder, parts, content, req.checkExisting, info);
    return { destination: `maildir:${r.path}`, duplicate: r.duplicate, copies: [{ kind: 'maildir', file: r.path, ...found(r.duplicate) }] };
  }
}

const found = (duplicate: boolean): { found?: true } => (duplicate ? { found: true } : {});
