// Local delivery of one message to one local user's mailbox folder: picks the mailbox path from
// the `mailbox.path` template, adds the trace headers (trace.ts) and writes Maildir or mbox.
// (Per-user Sieve will run here, before the write, in a later step.)
//
// Idempotence per (queue id, user, folder): the Maildir file name and the mbox intent key are
// derived from `targetKey(user, folder)`, so a retry with `checkExisting` finds an earlier copy
// instead of storing a second one (maildir.ts, mbox.ts).
//
// Path template: `{data_dir}` is the data folder; `{user}` the full address, `{local}` its local
// part, `{domain}` its domain, each made safe as ONE path segment (bytes outside
// [A-Za-z0-9._+=@-] and a leading '.' become %XX, so "../x" or "a/b" cannot leave the tree).
// A relative result is taken relative to the config file's folder.
//
// Config keys: `mailbox.format`, `mailbox.path`, `data_dir`, `hostname`.
import { createHash } from 'node:crypto';
import { isAbsolute, resolve } from 'node:path';
import type { Config } from '../config/load.js';
import type { DirSyncer } from '../queue/dir-sync.js';
import { parseAddress } from '../address/address.js';
import { deliveredBytes } from './trace.js';
import { MaildirWriter } from './maildir.js';
import { MboxWriter, mboxEntry, type MboxIntent, type MboxOptions } from './mbox.js';
import { folderSegments } from './folder.js';
import { DeliveryErrors } from './errors.js';

export type LocalDeliveryConfig = Pick<Config, 'mailbox' | 'data_dir' | 'hostname'> & { baseDir?: string };

/** Durable per-delivery records kept by the queue (spool intents), keyed by target key. */
export interface IntentStore {
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<void>;
}

export interface LocalDeliveryRequest {
  qid: string;
  /** Envelope sender ('' for <>). */
  sender: string;
  receivedAt: number;
  /** Canonical address of the local user. */
  user: string;
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

  constructor(
    private readonly config: LocalDeliveryConfig,
    syncer: DirSyncer,
    mboxOptions: MboxOptions = {},
  ) {
    this.maildir = new MaildirWriter(syncer);
    this.mbox = new MboxWriter(syncer, mboxOptions);
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

  /** Throws DeliveryError. */
  async deliver(req: LocalDeliveryRequest): Promise<LocalDeliveryResult> {
    const path = this.mailboxPath(req.user);
    const key = targetKey(req.user, req.folder);
    const bytes = deliveredBytes(req.sender, req.user, req.message);
    if (this.config.mailbox.format === 'mbox') {
      const intents = req.intents;
      const r = await this.mbox.deliver(path, req.folder, mboxEntry(req.sender, req.receivedAt, bytes), {
        checkExisting: req.checkExisting,
        intent: intents
          ? { get: async () => (await intents.get(key)) as MboxIntent | null, put: (v) => intents.put(key, v) }
          : undefined,
      });
      return { destination: `mbox:${r.path}`, duplicate: r.duplicate };
    }
    const parts = { qid: req.qid, receivedAt: req.receivedAt, key, hostname: this.config.hostname };
    const r = await this.maildir.deliver(path, req.folder, parts, bytes, req.checkExisting);
    return { destination: `maildir:${r.path}`, duplicate: r.duplicate };
  }
}
