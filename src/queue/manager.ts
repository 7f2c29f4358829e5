// The message queue: spools accepted messages (spool.ts), routes each recipient (router.ts),
// delivers local ones (delivery/local.ts) and keeps the rest. Implements MessageQueue (queue.ts).
//
// Per-recipient state. A spooled message expands into TARGETS: one per local (user, folder) and
// one per remote address, deduplicated. Each target is pending | deferred | done | failed | held.
//   - Fresh accept: the first round runs from memory right after `accept` resolved (off the
//     accept path) and, when every target ends done or failed, the entry is simply removed —
//     no state file at all, so a message costs the spool fsync plus the mailbox fsync and shared
//     directory fsyncs.
//   - When an entry outlives its first round (a deferred or held target), the target list with
//     each status is written to `<id>.state` atomically and durably: the done-marks. A restart
//     reads it and never retries a done or failed target.
//   - A crash after a mailbox write but before its done-mark (the state write or the removal) is
//     covered by idempotent delivery: every attempt after recovery runs with `checkExisting`, and
//     Maildir file names / mbox intents are deterministic per (queue id, user, folder).
//   - LMTP delivers local recipients before its replies, with no spool entry: an mbox append
//     there writes a standalone intent record first (delivery/mbox-intent.ts). The records of a
//     recipient stay until its outcome is final: removed (not durably) when all of it was
//     delivered, left for the check at start when it was refused, kept as the spool entry's
//     intents when part of it is spooled, so the retry (`checkExisting`) finds every copy a
//     Sieve plan stored before. At start, before anything else, every intent record left
//     without a message file is checked: a torn mbox entry it marks is cut off (the LMTP client,
//     never answered, sends the message again); any other such record is just removed.
//     Recipients of one LMTP transaction that reach the same user and folder (an alias and its
//     target) share one copy: a later one looks for the earlier one's (`checkExisting`), as the
//     targets of one spooled message are deduplicated. A Maildir copy stays as the first
//     recipient stored it (its Sieve plan's flags and header edits); an mbox entry is shared only
//     when its bytes are the same.
//   - A Maildir copy renamed into place whose folder fsync failed is a temporary failure marked
//     `stored` (maildir.ts): retried under the same queue id like any other (the retry finds the
//     copy), and LMTP keeps that recipient in the spool with a 250 rather than a 4xx (only a spool
//     that cannot take it either leaves the 4xx, and the copy is then taken back, as below).
//   - Copies stored before the client's reply (direct delivery, LMTP) are reported delivered only
//     once the reply is certain. When the rest of such a message cannot be spooled, the client
//     hears 4xx and sends it again, so its copies are taken back first (takeBack): Maildir files
//     removed, mbox entries cut off while they are still their file's last.
// Temporary failures retry after `outbound.retry` waits (plus up to 10% jitter, so a burst does
// not retry in lockstep); after `outbound.lifetime` the target is failed. Permanent failures (the
// user no longer exists, a bad folder name, a 5xx from the next hop) mark the target failed.
//
// Remote targets (RFC 5321 §5.1): the due ones of an entry are grouped by destination (the domain
// for MX delivery, the next hop URL for a route) and each group goes out in ONE transaction
// (transport/outbound.ts). The done-mark of a relayed recipient is written durably right after
// the group's answers (or, when that finishes the entry, the entry is removed and the removal
// fsynced), so a restart never sends it again; only a crash between the remote 250 and that
// write can repeat a delivery, as RFC 5321 §6.1 accepts.
//
// The next hop of a remote target is looked up again at every attempt, from the routes as they
// are then (config + store), as Postfix's qmgr resolves each recipient again: a route added
// while mail waits takes it at the next retry, a route removed leaves it to the MX, as for a new
// message. The state keeps no next hop (`.state` files of earlier builds carry a `via` per
// target: dropped when read, never used). While the store's routes have never been read, a
// recipient whose domain has no configured route is deferred (4.4.3), not sent by MX.
//
// Notices (dsn.ts, RFC 3464): after each round, failed targets (and delayed ones past
// `outbound.delay_warning`, successful ones that asked NOTIFY=SUCCESS) are reported in one DSN,
// queued through `accept` like any message, BEFORE the entry is marked notified or removed.
// A message with more than MAX_RECEIVED Received fields fails at once as a mail loop (5.4.6).
//
// Steering (`postern queue`, ETRN): `retry`, `remove`, `bounce` act on an entry by id.
// Remote targets without a transport (unit tests without DNS) stay HELD, as before.
//
// Config keys: `data_dir`, `hostname`, `mailbox.*`, `domains.local`, `routes`, `outbound.*`.
import { unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { Store } from '../store/store.js';
import type { Pipeline } from '../pipeline/types.js';
import type { Envelope, EnvelopeRecipient } from './envelope.js';
import type { MessageQueue, RecipientOutcome } from './queue.js';
import { logEvent } from '../log/logger.js';
import { DirSyncer } from './dir-sync.js';
import { Spool, type OrphanIntent } from './spool.js';
import { newQueueId } from './queue-id.js';
import { retryDelay } from './backoff.js';
import { LiveRoutes, type RouteSource } from '../policy/routes.js';
import { createRouter, type RemoteVia, type Router, type RouteTarget } from '../delivery/router.js';
import { LocalDelivery, targetKey, type IntentStore, type LocalDeliveryResult } from '../delivery/local.js';
import { DeliveryError, DeliveryErrors } from '../delivery/errors.js';
import { copyIdentity, type StoredCopy } from '../delivery/stored-copy.js';
import type { MboxOptions } from '../delivery/mbox.js';
import { parseStandaloneIntent, repairTornEntry, type TornEntryCheck } from '../delivery/mbox-intent.js';
import type { Outbound, OutboundResult } from '../transport/outbound.js';
import { destinationKey } from '../transport/outbound.js';
import type { OutRecipient } from '../transport/smtp-client.js';
import { buildDsn, countReceived, dsnNeedsSmtputf8, MAX_RECEIVED, wants, type DsnAction, type DsnRecipient } from './dsn.js';
import { clientFromSource } from '../transport/forward-client.js';

export type TargetStatus = 'pending' | 'deferred' | 'done' | 'failed' | 'held';

export interface TargetState {
  /** "L<hash of user+folder>" or "R:<address>". */
  key: string;
  /** The envelope recipient this target came from. */
  rcpt: string;
  kind: 'local' | 'remote';
  user?: string;
  folder?: string;
  address?: string;
  domain?: string;
  status: TargetStatus;
  /** Failed attempts so far. */
  attempts: number;
  /** When a deferred target is due (ms since the epoch). */
  next?: number;
  /** Last error or reply text. */
  last?: string;
  /** RFC 3463 status of the last answer (for DSNs). */
  enhanced?: string;
  /** "dns; host" of the server that gave the last answer. */
  remoteMta?: string;
  /** The last attempt (ms since the epoch). */
  at?: number;
  /** Delivered to a next hop that took over DSN duties (no "relayed" notice from us). */
  nextHopDsn?: boolean;
  /** Notices already queued for this target. */
  notified?: DsnAction[];
}

export interface EntryState {
  v: 1;
  targets: TargetState[];
}

interface Entry {
  id: string;
  envelope: Envelope;
  /** Kept in memory for the first round; dropped when the entry waits. */
  message: Buffer | null;
  state: EntryState | null;
  /** Attempts from now on may follow an earlier one (recovery, retries). */
  checkExisting: boolean;
  /** Failed rounds that never got as far as targets (directory down, spool read error). */
  entryFailures: number;
  timer?: NodeJS.Timeout;
  /** The last state write in flight (checkpoint serialises them). */
  writing?: Promise<void>;
  /** Deleted by the administrator: no round may start any more. */
  cancelled?: boolean;
  /** The state in memory was never written (writeFirstState failed): the next round writes it. */
  unsaved?: boolean;
}

export interface QueueOptions {
  config: Config;
  log: Logger;
  directory: Directory;
  store?: Store;
  pipeline?: Pick<Pipeline, 'observe'>;
  /** Entries delivered at once (default 64). */
  concurrency?: number;
  mbox?: MboxOptions;
  /** The SMTP/LMTP client. Without it remote targets are held in the spool. */
  outbound?: Outbound;
  /** Next hops; default: `routes` of the config plus the store's (src/policy/routes.ts). */
  routes?: RouteSource;
}

export interface ManagedQueue extends MessageQueue {
  /** Resolves when nothing is waiting to run or running (timers for later retries aside). */
  idle(): Promise<void>;
  /** Ids of spooled entries known in memory, with their targets (for `postern queue list`). */
  entries(): { id: string; envelope: Envelope; targets: TargetState[] | null }[];
  readonly spool: Spool;
  /**
   * Runs deferred targets now (one entry, or all; `domain` narrows to remote targets there, as
   * ETRN; `subdomains` also takes its subdomains, as `ETRN @domain`). The number of entries.
   */
  retry(id?: string, domain?: string, opts?: { subdomains?: boolean }): Promise<number>;
  /** Removes an entry without notice. False when there is no such entry. */
  remove(id: string): Promise<boolean>;
  /** Fails every open target of an entry (5.0.0, by the administrator) and sends the DSN. */
  bounce(id: string): Promise<boolean>;
  /** Takes over an entry already committed under spool/q by someone else (maildrop pickup). */
  adopt(id: string): Promise<void>;
}

const MAX_TIMER = 2 ** 31 - 1;
/** Mailboxes checked side by side at start for torn entries (each check holds its locks and descriptors). */
const ORPHAN_CHECKS_AT_ONCE = 16;

export function createMessageQueue(opts: QueueOptions): ManagedQueue {
  return new QueueManager(opts);
}

class QueueManager implements ManagedQueue {
  readonly spool: Spool;
  private readonly syncer = new DirSyncer();
  private readonly router: Router;
  private readonly local: LocalDelivery;
  private readonly log: Logger;
  private readonly known = new Map<string, Entry>();
  private readonly waiting: Entry[] = [];
  private readonly running = new Map<string, Promise<void>>();
  /** Entries asked to run while a round of theirs was running: they run again right after. */
  private readonly rerun = new Set<string>();
  private readonly concurrency: number;
  private initP: Promise<void> | null = null;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: QueueOptions) {
    this.spool = new Spool(opts.config.data_dir, this.syncer, opts.log);
    this.router = createRouter({ config: opts.config, directory: opts.directory, routes: opts.routes ?? new LiveRoutes(opts.config.routes, opts.store) });
    // Per-user Sieve (delivery/sieve.ts) needs the store and a way to queue redirects, vacation
    // replies and refusals: through `accept`, like any message.
    this.local = new LocalDelivery(opts.config, this.syncer, opts.mbox, {
      store: opts.store,
      log: opts.log,
      submit: async (envelope, message) => {
        const id = this.newId();
        await this.accept(id, envelope, message);
        return id;
      },
    });
    this.log = opts.log;
    this.concurrency = opts.concurrency ?? 64;
  }

  newId(): string {
    return newQueueId();
  }

  private init(): Promise<void> {
    this.initP ??= this.spool.init().then(({ removedTemp }) => {
      if (removedTemp) logEvent(this.log, 'info', 'spool.recover', { removedTemp }, 'removed unfinished spool writes');
    });
    return this.initP;
  }

  async accept(id: string, envelope: Envelope, message: Buffer): Promise<void> {
    await this.init();
    if (await this.deliverDirect(id, envelope, message)) return;
    await this.spool.accept(id, envelope, message);
    this.track(id, envelope, message);
  }

  /** A fresh entry just committed to the spool: known, and queued for its first round. */
  private track(id: string, envelope: Envelope, message: Buffer): void {
    logEvent(this.log, 'debug', 'spool.commit', { qid: id, size: message.length, rcpts: envelope.recipients.length });
    const entry: Entry = { id, envelope, message, state: null, checkExisting: false, entryFailures: 0 };
    this.known.set(id, entry);
    if (!this.stopped) this.enqueue(entry);
  }

  /**
   * The copies of one transaction (per-recipient header edits give some recipients a copy of
   * their own, smtp/copies.ts), committed together: the client hears one reply for all of them,
   * so either every copy is spooled or none is. A copy is never delivered before the last one is
   * committed (no direct delivery, rounds start after the last commit); when a commit fails, the
   * copies committed before it are removed durably and the error is thrown, and the client's
   * retry sends each recipient one copy. Only a removal that fails too leaves a copy behind
   * (logged): it is not scheduled now, the next start delivers it, and its recipients may get
   * the retry's copy as well.
   */
  async acceptAll(copies: { id: string; envelope: Envelope; message: Buffer }[]): Promise<void> {
    if (copies.length === 1) return this.accept(copies[0]!.id, copies[0]!.envelope, copies[0]!.message);
    await this.init();
    const committed: string[] = [];
    try {
      for (const c of copies) {
        await this.spool.accept(c.id, c.envelope, c.message);
        committed.push(c.id);
      }
    } catch (e) {
      await this.withdraw(committed);
      throw e;
    }
    for (const c of copies) this.track(c.id, c.envelope, c.message);
  }

  /** Removes committed copies that no round has seen (acceptAll's undo), durably. */
  private async withdraw(ids: string[]): Promise<void> {
    for (const id of ids) {
      try {
        await this.spool.remove(id, { hasState: false, durable: true });
        logEvent(this.log, 'warn', 'spool.withdrawn', { qid: id }, 'a copy was withdrawn: another copy of the same transaction could not be spooled');
      } catch (e) {
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'a copy of a transaction that failed could not be withdrawn for certain: if it is still in the spool, the next start delivers it');
      }
    }
  }

  /**
   * Local-only mail goes straight into the Maildirs, before the caller's 250, and skips the
   * spool: each copy is as durable as a spool file would have been (written, fdatasynced,
   * renamed, folder fsynced), and the message is written once instead of twice. Taken only when
   * every recipient routes to local targets, the mailbox format is Maildir (an mbox append needs
   * the spool's intent record to be repaired after a crash), no recipient asks for a success DSN,
   * the message is not looping, and the queue is running. Any target that fails sends the whole entry through the spool with the
   * delivered targets marked done, so the usual rounds retry or bounce the rest. False: nothing
   * was delivered, spool as usual.
   */
  private async deliverDirect(id: string, envelope: Envelope, message: Buffer): Promise<boolean> {
    if (this.stopped || this.opts.config.mailbox.format !== 'maildir' || envelope.recipients.length === 0) return false;
    // NOTIFY=SUCCESS asks for a "delivered" DSN, which the spool rounds send (notify()).
    if (envelope.mailFrom && envelope.recipients.some((r) => r.notify?.includes('SUCCESS'))) return false;
    const targets: TargetState[] = [];
    const seen = new Set<string>();
    for (const rcpt of envelope.recipients) {
      const r = await this.expand(rcpt);
      if ('error' in r) return false;
      for (const t of r.targets) {
        if (t.kind !== 'local') return false;
        if (seen.has(t.key)) continue;
        seen.add(t.key);
        targets.push(t);
      }
    }
    if (countReceived(message) > MAX_RECEIVED) return false;
    // Copies are reported delivered only once the client's 250 is certain (below).
    const stores: BeforeReply[] = [];
    const results = await Promise.all(
      targets.map(async (t) => {
        const r = await this.storeFirstTime(id, envelope, message, t);
        if (!(r instanceof DeliveryError)) {
          t.status = 'done';
          stores.push({ t, copies: r.copies, delivered: r });
          return true;
        }
        stores.push({ t, copies: r.copies });
        logEvent(this.log, 'info', 'delivery.direct_fallback', { qid: id, rcpt: t.rcpt, err: String(r) }, 'direct delivery failed; the spool takes over');
        return false;
      }),
    );
    if (results.every(Boolean)) {
      this.report(id, stores);
      return true;
    }
    // The rest goes through the spool; the first round retries it at once and, for a permanent
    // failure, bounces it.
    const state: EntryState = { v: 1, targets };
    try {
      await this.spool.accept(id, envelope, message);
    } catch (e) {
      // The client hears 4xx and sends the message again: the copies stored a moment ago go
      // first, or their recipients would get the retry's copy as well.
      await this.takeBack(id, stores);
      throw e;
    }
    this.report(id, stores);
    const saved = await this.writeFirstState(id, state);
    const entry: Entry = { id, envelope, message, state, checkExisting: true, entryFailures: 0, ...(saved ? {} : { unsaved: true }) };
    this.known.set(id, entry);
    this.enqueue(entry);
    return true;
  }

  /**
   * The first state record of an entry that is committed already (its message is in q/). A
   * failure here must not become the client's 4xx: the message would then be both kept (and
   * delivered at the next start) and sent again by the client. The state stays in memory and
   * the entry's first round writes it again; a crash before that re-plans the entry, and its
   * deliveries look for earlier copies (checkExisting).
   */
  private async writeFirstState(id: string, state: EntryState): Promise<boolean> {
    try {
      await this.spool.writeState(id, state);
      return true;
    } catch (e) {
      logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'could not write the state of a committed entry; its first round tries again');
      return false;
    }
  }

  /** Copies stored before the client's reply, reported delivered once that reply is certain. */
  private report(id: string, stores: BeforeReply[]): void {
    for (const { t, delivered: d } of stores) if (d) this.delivered(id, t, d.destination, d.duplicate);
  }

  /**
   * One local target's first delivery, before the client has its reply: what was stored, or the
   * error; nothing is reported yet. No earlier copy can exist, so none is looked for, unless
   * `userReachedBefore`: another recipient of this LMTP transaction reached the same user.
   * `intents`: where an mbox append records itself (deliverNow's standalone records); the direct
   * Maildir path has no mbox appends and passes none.
   */
  private async storeFirstTime(id: string, envelope: Envelope, message: Buffer, t: TargetState, intents?: IntentStore, userReachedBefore = false): Promise<LocalDeliveryResult | DeliveryError> {
    try {
      return await this.local.deliver({ qid: id, sender: envelope.mailFrom, receivedAt: envelope.receivedAt, user: t.user!, rcpt: t.rcpt, folder: t.folder, message, checkExisting: userReachedBefore, ...(intents ? { intents } : {}) });
    } catch (e) {
      return asDeliveryError(e);
    }
  }

  /**
   * Takes back the copies stored before the client's reply (a direct delivery, or an LMTP
   * recipient's) when the rest could not be spooled and the client is about to hear 4xx, so that
   * its recipients get only the retry's copy, after a crash too:
   *   - a Maildir file is unlinked and its folder fsynced;
   *   - an mbox entry is cut off, and the file fdatasynced, while the file still ends with it
   *     (mbox.ts); the entries of one file go last first.
   * A copy that is gone already (a reader moved a Maildir file to cur/ meanwhile), that another
   * entry follows, or that cannot be removed stays, and is logged: its recipient will have two.
   * What a Sieve script did besides storing (a redirect, a vacation reply) is not taken back;
   * the client's resend does not repeat it (delivery/sieve.ts records both).
   * Only the delivery that wrote a copy takes it back, never one that found it (`found`).
   * `standing`: copies that are also a recipient's answered 250 (copyIdentity); they stay.
   */
  private async takeBack(id: string, written: BeforeReply[], standing: ReadonlySet<string> = new Set()): Promise<void> {
    const maildirs = new Map<string, { t: TargetState; file: string }[]>();
    const mboxes = new Map<string, { t: TargetState; offset: number; entry: Buffer }[]>();
    // Recipients reaching one user and folder share one copy: each is taken once.
    const seen = new Set(standing);
    for (const { t, copies } of written) {
      for (const c of copies) {
        if (c.found) continue;
        const identity = copyIdentity(c);
        if (seen.has(identity)) continue;
        seen.add(identity);
        if (c.kind === 'maildir') pushTo(maildirs, dirname(c.file), { t, file: c.file });
        else pushTo(mboxes, c.file, { t, offset: c.offset, entry: c.entry });
      }
    }
    const failed = (t: TargetState, fields: Record<string, unknown>, err: unknown) =>
      logEvent(this.log, 'error', 'delivery.take_back_failed', { qid: id, rcpt: t.rcpt, user: t.user, ...fields, err: String(err) }, 'a copy delivered before the spool failed could not be taken back: its recipient may get the message twice');
    const takenBack = (t: TargetState, fields: Record<string, unknown>) =>
      logEvent(this.log, 'warn', 'delivery.taken_back', { qid: id, rcpt: t.rcpt, user: t.user, ...fields }, 'copy taken back: the rest of the message could not be spooled, and the client will send it again');
    const maildirWork = [...maildirs].map(async ([folder, copies]) => {
      const removed: typeof copies = [];
      for (const c of copies) {
        try {
          await unlink(c.file);
          removed.push(c);
        } catch (e) {
          failed(c.t, { file: c.file }, e);
        }
      }
      if (!removed.length) return;
      try {
        await this.syncer.sync(folder);
      } catch (e) {
        logEvent(this.log, 'error', 'delivery.take_back_failed', { qid: id, folder, err: String(e) }, 'removed copies may come back after a crash: the folder could not be fsynced');
      }
      for (const c of removed) takenBack(c.t, { file: c.file });
    });
    const mboxWork = [...mboxes].map(async ([file, entries]) => {
      // Last first; once one stays, so must every entry before it (it is not the file's last).
      let stays: string | undefined;
      for (const c of entries.sort((a, b) => b.offset - a.offset)) {
        const fields = { file, offset: c.offset };
        if (stays) {
          failed(c.t, fields, stays);
          continue;
        }
        try {
          const r = await this.local.mbox.takeBack(file, c.offset, c.entry);
          if (r === 'removed') takenBack(c.t, fields);
          else failed(c.t, fields, r === 'absent' ? 'the mbox file is gone' : 'the mbox no longer ends with this entry');
          if (r === 'changed') stays = 'an entry after it in the mbox stays';
        } catch (e) {
          failed(c.t, fields, e);
          stays = 'an entry after it in the mbox stays';
        }
      }
    });
    await Promise.all([...maildirWork, ...mboxWork]);
  }

  async deliverNow(id: string, envelope: Envelope, message: Buffer): Promise<RecipientOutcome[]> {
    await this.init();
    const outcomes: RecipientOutcome[] = [];
    const spoolRcpts: EnvelopeRecipient[] = [];
    const spoolTargets = new Map<string, TargetState>();
    const pendingOutcome: number[] = [];
    const pendingStores: BeforeReply[] = [];
    // Failures of targets whose recipient waits on the spool: reported once it has them.
    const pendingFailures: { t: TargetState; err: DeliveryError; temporary: boolean }[] = [];
    // Copies of recipients answered 250 (copyIdentity): one a later recipient found or wrote
    // again (the same user and folder) is theirs too, and is never taken back.
    const standing = new Set<string>();
    // Local users this transaction's earlier recipients reached: a later recipient reaching one
    // again looks for the copies stored for it (in any folder its Sieve plan picks) rather than
    // storing second ones.
    const reached = new Set<string>();
    // Standalone intent records: of recipients whose outcome is final, of spooled ones.
    const finished = new Set<string>();
    const kept = new Set<string>();
    for (const rcpt of envelope.recipients) {
      const r = await this.expand(rcpt);
      if ('error' in r) {
        outcomes.push(outcome(rcpt, r.error));
        continue;
      }
      const written = new Set<string>();
      // This recipient's copies: reported delivered once its reply is certain (below).
      const stores: BeforeReply[] = [];
      const results = await Promise.all(
        r.targets.map(async (t) => {
          if (t.kind !== 'local') return { t, ok: true as const };
          const d = await this.storeFirstTime(id, envelope, message, t, this.standaloneIntents(id, written), reached.has(t.user!.toLowerCase()));
          if (d instanceof DeliveryError) {
            stores.push({ t, copies: d.copies });
            return { t, ok: false as const, err: d };
          }
          stores.push({ t, copies: d.copies, delivered: d });
          return { t, ok: true as const };
        }),
      );
      for (const t of r.targets) if (t.kind === 'local') reached.add(t.user!.toLowerCase());
      // A copy already in its mailbox whose folder fsync failed (`stored`) is kept, not refused:
      // a 4xx would bring the message back under another queue id, and the retry could not tell
      // it from the copy in place. It waits in the spool; its retry finds that copy.
      const anyKept = results.some((x) => x.ok || x.err.stored);
      if (!anyKept) {
        // Nothing of this recipient went anywhere: report the first failure; the client retries.
        const err = results.map((x) => (x.ok ? null : x.err)).find((e) => e && e.temporary) ?? (results[0] as { err: DeliveryError }).err;
        for (const x of results) if (!x.ok) this.logFailure(id, x.t, x.err, false);
        outcomes.push(outcome(rcpt, err));
        // The records of these failed appends stay for the check at start: a truncate-back that
        // failed too may have left a torn entry (the check finds nothing and removes them).
        continue;
      }
      // Something was delivered or must be relayed: answer 250 and keep the rest in the spool.
      let spooled = false;
      for (const x of results) {
        const t = x.t;
        if (t.kind === 'remote') {
          t.status = 'held';
          spooled = true;
        } else if (x.ok) {
          t.status = 'done';
        } else if (x.err.temporary) {
          t.status = 'deferred';
          t.attempts = 1;
          t.last = x.err.message;
          t.next = Date.now() + retryDelay(this.opts.config.outbound.retry, 1);
          spooled = true;
          pendingFailures.push({ t, err: x.err, temporary: true });
        } else {
          // Another target of this recipient was delivered, so the reply is 250: this failure
          // reaches the sender as a DSN from the spool's first round, as over SMTP.
          t.status = 'failed';
          t.last = x.err.message;
          t.enhanced = x.err.enhanced;
          t.at = Date.now();
          spooled = true;
          pendingFailures.push({ t, err: x.err, temporary: false });
        }
        if (!spoolTargets.has(t.key)) spoolTargets.set(t.key, t);
      }
      for (const k of written) (spooled ? kept : finished).add(k);
      if (spooled) {
        pendingStores.push(...stores);
        spoolRcpts.push(rcpt);
        pendingOutcome.push(outcomes.length);
        outcomes.push({ recipient: rcpt, status: 'queued', code: 250, enhanced: '2.0.0', text: `Queued as ${id}` });
      } else {
        this.report(id, stores);
        for (const { copies } of stores) for (const c of copies) standing.add(copyIdentity(c));
        outcomes.push({ recipient: rcpt, status: 'delivered', code: 250, enhanced: '2.0.0', text: `Delivered as ${id}` });
      }
    }
    if (spoolRcpts.length) {
      const keep = new Set(spoolRcpts.map((r) => r.address));
      const targets = [...spoolTargets.values()].filter((t) => keep.has(t.rcpt));
      const env: Envelope = { ...envelope, recipients: spoolRcpts };
      const state: EntryState = { v: 1, targets };
      try {
        await this.spool.accept(id, env, message);
      } catch (e) {
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'could not spool LMTP recipients');
        for (const i of pendingOutcome) outcomes[i] = outcome(outcomes[i]!.recipient, DeliveryErrors.localError(e));
        // Those recipients hear 451 and come again: their copies go first (takeBack).
        await this.takeBack(id, pendingStores, standing);
        await this.dropIntents(id, [...finished, ...kept]);
        return outcomes;
      }
      this.report(id, pendingStores);
      for (const f of pendingFailures) this.logFailure(id, f.t, f.err, f.temporary);
      const saved = await this.writeFirstState(id, state);
      const entry: Entry = { id, envelope: env, message: null, state, checkExisting: true, entryFailures: 0, ...(saved ? {} : { unsaved: true }) };
      this.known.set(id, entry);
      for (const t of targets) if (t.status === 'held') this.held(id, t);
      this.reschedule(entry);
    }
    // The records of spooled recipients are now the entry's intents (its message file exists,
    // so the check at start leaves them to the entry's retry).
    await this.dropIntents(id, [...finished].filter((k) => !kept.has(k)));
    return outcomes;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.init();
    const { ids, orphans } = await this.spool.scan();
    // Before any delivery: one appending to an mbox with a torn entry would glue itself to it.
    await this.checkOrphanIntents(orphans);
    let resumed = 0;
    const firstRounds: Promise<void>[] = [];
    const later: Entry[] = [];
    for (const id of ids) {
      if (this.known.has(id)) continue;
      let entry: Entry;
      try {
        const { envelope } = await this.spool.read(id);
        const state = fromDisk(await this.spool.readState<EntryState>(id));
        entry = { id, envelope, message: null, state, checkExisting: true, entryFailures: 0 };
      } catch (e) {
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'unreadable spool entry left in place');
        continue;
      }
      this.known.set(id, entry);
      resumed++;
      if (this.spool.hasIntents(id)) {
        // An mbox append may have been cut short: repair it before anything else appends.
        firstRounds.push(this.runEntry(entry));
      } else {
        later.push(entry);
      }
    }
    // Only then the others: one of them appending to that mbox first would leave the torn
    // prefix inside the file, glued to its own "From " line.
    await Promise.all(firstRounds);
    for (const entry of later) this.reschedule(entry);
    if (resumed) logEvent(this.log, 'info', 'spool.recover', { entries: resumed }, 'resumed spooled messages');
  }

  /**
   * Intent records without a message file (see the header). A standalone one is checked against
   * its mbox (mbox-intent.ts) and removed durably; one whose check fails is kept for the next
   * start. Any other was left by a crash inside a spool removal and is removed, as always.
   */
  private async checkOrphanIntents(orphans: OrphanIntent[]): Promise<void> {
    // The records of one mailbox in the order they were written, mailboxes side by side: a
    // mailbox that another program keeps locked then holds up the start by one lock timeout, not
    // one per record, and the other mailboxes are repaired meanwhile.
    const byMailbox = new Map<string, { id: string; key: string; rec: TornEntryCheck | null }[]>();
    for (const { id, key, record } of orphans) {
      const rec = parseStandaloneIntent(record);
      const group = rec ? rec.file : `${id}.${key}`;
      const list = byMailbox.get(group) ?? [];
      list.push({ id, key, rec });
      byMailbox.set(group, list);
    }
    const groups = [...byMailbox.values()];
    const worker = async () => {
      for (let list = groups.shift(); list; list = groups.shift()) {
        for (const { id, key, rec } of list) {
          if (rec && !(await this.repairTorn(id, rec))) continue;
          // A removal that fails is harmless: the next start checks the record again.
          await this.dropIntents(id, [key], { durable: rec !== null });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ORPHAN_CHECKS_AT_ONCE, groups.length) }, worker));
  }

  /** One standalone record's check, logged; false when it failed (the record stays). */
  private async repairTorn(id: string, rec: TornEntryCheck): Promise<boolean> {
    const fields = { qid: id, file: rec.file, offset: rec.offset, length: rec.length };
    try {
      const outcome = await repairTornEntry(this.local.mbox, rec);
      if (outcome === 'truncated') logEvent(this.log, 'warn', 'delivery.mbox_torn_repaired', fields, 'cut off an mbox entry torn by a crash; the LMTP client sends it again');
      else logEvent(this.log, 'info', 'delivery.mbox_intent_dropped', { ...fields, outcome }, 'mbox left as it is');
      return true;
    } catch (e) {
      logEvent(this.log, 'error', 'delivery.mbox_repair_failed', { ...fields, err: String(e) }, 'could not check an mbox for a torn entry; tried again at the next start');
      return false;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.waiting.length = 0;
    for (const e of this.known.values()) {
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
    }
    await Promise.all(this.running.values());
    // Entries stay on disk; the next start() resumes them.
    this.known.clear();
    await this.spool.close();
    this.initP = null;
    this.notifyIdle();
  }

  idle(): Promise<void> {
    if (this.waiting.length === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  entries() {
    return [...this.known.values()].map((e) => ({ id: e.id, envelope: e.envelope, targets: e.state?.targets ?? null }));
  }

  // --- scheduling ---------------------------------------------------------------------------

  private enqueue(entry: Entry): void {
    if (this.stopped || entry.cancelled || this.waiting.includes(entry)) return;
    // A round that reschedules itself (a retry already due, a notice) or a retry/ETRN during a
    // round must not be lost: run once more when this round ends.
    if (this.running.has(entry.id)) {
      this.rerun.add(entry.id);
      return;
    }
    this.waiting.push(entry);
    this.pump();
  }

  private pump(): void {
    while (this.running.size < this.concurrency && this.waiting.length) {
      const entry = this.waiting.shift()!;
      const p = this.runEntry(entry).finally(() => this.afterRound(entry));
      this.running.set(entry.id, p);
    }
  }

  /** A round (or an exclusive action) of `entry` ended: the rerun asked for meanwhile, then the next waiting entries. */
  private afterRound(entry: Entry): void {
    this.running.delete(entry.id);
    if (this.rerun.delete(entry.id) && this.known.get(entry.id) === entry) this.reschedule(entry);
    this.pump();
    this.notifyIdle();
  }

  /** Takes an entry off the schedule: its timer and its place in the waiting list. */
  private unschedule(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    const i = this.waiting.indexOf(entry);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  private notifyIdle(): void {
    if (this.waiting.length === 0 && this.running.size === 0) {
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      ws.forEach((w) => w());
    }
  }

  /** Arms the timer for the next due target, or runs now when one is due. */
  private reschedule(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    if (this.stopped || entry.cancelled) return;
    const due = nextDue(entry, !!this.opts.outbound, this.opts.config);
    if (due === null) return; // only held / finished targets: wait for the relay client
    const wait = Math.max(0, due - Date.now());
    if (wait === 0) return this.enqueue(entry);
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.enqueue(entry);
    }, Math.min(wait, MAX_TIMER));
    entry.timer.unref();
  }

  // --- one delivery round -------------------------------------------------------------------

  private async runEntry(entry: Entry): Promise<void> {
    const { id } = entry;
    try {
      const message = entry.message ?? (await this.readMessage(entry));
      if (message === null) return;
      if (!entry.state) await this.plan(entry, message);
      const before = JSON.stringify(entry.state);
      const now = Date.now();
      const state = entry.state!;
      let remoteDone = false;
      let checkpointed = false;
      const remoteDue = state.targets.filter((t) => t.kind === 'remote' && (t.status === 'pending' || t.status === 'held' || (t.status === 'deferred' && (t.next ?? 0) <= now)));
      const groups = this.opts.outbound ? await this.destinations(entry, remoteDue, now) : [];
      if (!this.opts.outbound) {
        for (const t of remoteDue) {
          if (t.status === 'pending') {
            t.status = 'held';
            this.held(id, t);
          }
        }
      }
      // allSettled: a failed checkpoint of one group must not end the round while another group
      // is still being sent (its done-mark would land after the round, outside `running`).
      const settled = await Promise.allSettled([
        ...state.targets.map(async (t) => {
          if (t.kind === 'remote') return;
          if (t.status === 'pending' || (t.status === 'deferred' && (t.next ?? 0) <= now)) await this.deliverTarget(entry, t, message);
        }),
        ...groups.map(async (g) => {
          const sent = await this.relayGroup(entry, g, message);
          if (sent) remoteDone = true;
          // The done-mark (RFC 5321 §6.1: never deliver twice): durable before anything else,
          // unless this group finishes the entry, whose removal is then made durable instead.
          if (sent && (groups.length > 1 || isOpen(state) || needsNotice(entry, state, Date.now(), this.opts.config))) {
            await this.checkpoint(entry);
            checkpointed = true;
          }
        }),
      ]);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      entry.entryFailures = 0;
      await this.notify(entry, message);
      if (!isOpen(state) && !needsNotice(entry, state, Date.now(), this.opts.config)) {
        // A fresh entry finished in its first round never had a state file.
        // A relayed message must not come back after a crash: its removal is made durable.
        await this.spool.remove(id, { hasState: entry.checkExisting || checkpointed, durable: remoteDone });
        this.known.delete(id);
        return;
      }
      if (entry.unsaved || JSON.stringify(entry.state) !== before || !entry.checkExisting) await this.checkpoint(entry);
      entry.unsaved = false;
      entry.checkExisting = true;
      entry.message = null;
      this.reschedule(entry);
    } catch (e) {
      // Whole-entry trouble (directory down, spool unreadable, state not writable): retry later.
      entry.entryFailures++;
      entry.checkExisting = true;
      entry.message = null;
      // The state in memory is kept, never re-read: it holds done-marks of recipients the next
      // hop accepted this round that may not be on disk (a failed checkpoint or removal), and
      // they must not be sent again. Writing it is tried once more; the next round retries.
      if (entry.state && !entry.cancelled) await this.checkpoint(entry).catch(() => undefined);
      const wait = retryDelay(this.opts.config.outbound.retry, entry.entryFailures);
      logEvent(this.log, 'warn', 'delivery.deferred', { qid: id, err: String(e), retryInMs: wait }, 'delivery round failed');
      if (!this.stopped && !entry.cancelled) {
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          this.enqueue(entry);
        }, Math.min(wait, MAX_TIMER));
        entry.timer.unref();
      }
    }
  }

  /**
   * The message file, or null when it is gone: removed by a removal whose folder fsync then
   * failed, or by hand. Nothing is left to deliver; the entry is forgotten (its side files too,
   * as recovery would) instead of failing every round from then on.
   */
  private async readMessage(entry: Entry): Promise<Buffer | null> {
    try {
      return (await this.spool.read(entry.id)).message;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      logEvent(this.log, 'warn', 'spool.gone', { qid: entry.id }, 'spooled message file is gone; entry dropped');
      this.known.delete(entry.id);
      await this.spool.remove(entry.id).catch(() => undefined);
      return null;
    }
  }

  /** Works out an entry's targets (first round, or a bounce before any round). */
  private async plan(entry: Entry, message: Buffer): Promise<void> {
    const { id } = entry;
    const targets: TargetState[] = [];
    const seen = new Set<string>();
    for (const rcpt of entry.envelope.recipients) {
      const r = await this.expand(rcpt);
      if ('error' in r) {
        if (r.error.temporary) throw r.error; // directory trouble: retry the whole entry
        const t: TargetState = { key: `X:${rcpt.address}`, rcpt: rcpt.address, kind: 'local', status: 'failed', attempts: 0, last: r.error.message, enhanced: r.error.enhanced, at: Date.now() };
        this.logFailure(id, t, r.error, false);
        targets.push(t);
        continue;
      }
      for (const t of r.targets) {
        if (seen.has(t.key)) continue;
        seen.add(t.key);
        targets.push(t);
      }
    }
    entry.state = { v: 1, targets };
    // RFC 5321 §6.3: a message that has passed too many hosts is looping; give it up.
    if (countReceived(message) > MAX_RECEIVED) {
      const err = new DeliveryError(false, 554, '5.4.6', `Too many Received header fields (more than ${MAX_RECEIVED}): mail loop`);
      for (const t of targets) {
        if (t.status === 'done' || t.status === 'failed') continue;
        t.status = 'failed';
        t.last = err.message;
        t.enhanced = err.enhanced;
        t.at = Date.now();
        this.logFailure(id, t, err, false, 'mail loop');
      }
    }
  }

  /** Writes the entry's state durably; writes of one entry never overlap (last one wins). */
  private checkpoint(entry: Entry): Promise<void> {
    const p = (entry.writing ?? Promise.resolve()).catch(() => undefined).then(() => this.spool.writeState(entry.id, entry.state));
    entry.writing = p;
    return p;
  }

  /**
   * The next hop of each due remote target, looked up now (never taken from an earlier attempt),
   * and the targets grouped by destination. A target whose next hop cannot be known now (the
   * store's routes never read, and no configured route) is deferred as a 4xx would defer it:
   * neither sent by MX, where its route may not lead, nor bounced.
   */
  private async destinations(entry: Entry, due: TargetState[], now: number): Promise<Destination[]> {
    if (due.length === 0) return [];
    const unknown = (t: TargetState, e: unknown) =>
      // RFC 3463 X.4.3: the routing directory could not be asked.
      this.settle(entry, t, { status: 'temp', code: 451, enhanced: '4.4.3', text: `next hop unknown for now: ${e instanceof Error ? e.message : String(e)}`, remote: false }, now);
    let nextHop: Awaited<ReturnType<Router['nextHops']>>;
    try {
      nextHop = await this.router.nextHops();
    } catch (e) {
      for (const t of due) unknown(t, e);
      return [];
    }
    const resolved: { t: TargetState; via: RemoteVia }[] = [];
    for (const t of due) {
      try {
        resolved.push({ t, via: nextHop(t.address!, t.domain!).via });
      } catch (e) {
        unknown(t, e);
      }
    }
    return groupByDestination(resolved);
  }

  /** Sends one destination's targets in one transaction; true when any was accepted. */
  private async relayGroup(entry: Entry, g: Destination, message: Buffer): Promise<boolean> {
    const { id, envelope } = entry;
    const byAddr = new Map(envelope.recipients.map((r) => [r.address, r]));
    const rcpts: OutRecipient[] = g.targets.map((t) => {
      const r = byAddr.get(t.rcpt);
      // An alias target is a new recipient: its ORCPT is the address the client gave us
      // (RFC 3461 §6.3), NOTIFY carries over.
      const orcpt = r?.orcpt ?? (t.rcpt !== t.address ? `rfc822;${xtext(t.rcpt)}` : undefined);
      return { address: t.address!, ...(r?.notify ? { notify: r.notify } : {}), ...(orcpt ? { orcpt } : {}) };
    });
    let results: Map<string, OutboundResult>;
    try {
      results = await this.opts.outbound!.deliver(g.domain, g.via, {
        mailFrom: envelope.mailFrom,
        recipients: rcpts,
        ...(envelope.ret ? { ret: envelope.ret } : {}),
        ...(envelope.envid ? { envid: envelope.envid } : {}),
        ...(envelope.smtputf8 ? { smtputf8: true } : {}),
        // Sent on only where a route's forward_client asks for it (XCLIENT/XFORWARD).
        client: clientFromSource(envelope.source, id),
        message,
      });
    } catch (e) {
      const r: OutboundResult = { status: 'temp', code: 451, enhanced: '4.3.0', text: `outbound error: ${(e as Error).message}`, remote: false };
      results = new Map(rcpts.map((rc) => [rc.address, r]));
    }
    let sent = false;
    const now = Date.now();
    for (const t of g.targets) {
      const r = results.get(t.address!) ?? { status: 'temp' as const, code: 451, enhanced: '4.4.1', text: 'no result', remote: false };
      if (this.settle(entry, t, r, now)) sent = true;
    }
    return sent;
  }

  /**
   * Records one remote target's answer: done, failed, or deferred with the next wait (failed with
   * 4.4.7 past `outbound.lifetime`). True when the next hop accepted it.
   */
  private settle(entry: Entry, t: TargetState, r: OutboundResult, now: number): boolean {
    const { id, envelope } = entry;
    t.at = now;
    t.enhanced = r.enhanced;
    t.last = `${r.code} ${r.enhanced} ${r.text}`;
    if (r.remoteMta) t.remoteMta = r.remoteMta;
    else delete t.remoteMta;
    if (r.status === 'sent') {
      t.status = 'done';
      t.next = undefined;
      if (r.nextHopDsn) t.nextHopDsn = true;
      logEvent(this.log, 'info', 'delivery.relayed', { qid: id, rcpt: t.address, remote: r.remoteMta, reply: `${r.code} ${r.enhanced} ${r.text}` });
      this.observe('delivered', { queueId: id, recipient: t.rcpt, destination: r.remoteMta ?? 'remote' });
      return true;
    }
    const err = new DeliveryError(r.status === 'temp', r.code, r.enhanced, r.text);
    if (r.status === 'perm') {
      t.status = 'failed';
      t.next = undefined;
      this.logFailure(id, t, err, false);
      return false;
    }
    t.attempts++;
    const next = Math.max(now + withJitter(retryDelay(this.opts.config.outbound.retry, t.attempts)), r.retryAt ?? 0);
    if (next - envelope.receivedAt > this.opts.config.outbound.lifetime) {
      t.status = 'failed';
      t.next = undefined;
      // RFC 3463 X.4.7: delivery time expired; the last reply stays as the diagnostic.
      t.enhanced = '4.4.7';
      this.logFailure(id, t, err, false, 'lifetime exceeded');
      return false;
    }
    t.status = 'deferred';
    t.next = next;
    this.logFailure(id, t, err, true);
    return false;
  }

  /**
   * Queues the notices this entry owes (dsn.ts) and marks the targets notified. The DSN is
   * spooled before the marks are written, so a crash can repeat a notice but never lose one.
   */
  private async notify(entry: Entry, message: Buffer): Promise<void> {
    const state = entry.state;
    if (!state) return;
    const { envelope, id } = entry;
    const now = Date.now();
    const byAddr = new Map(envelope.recipients.map((r) => [r.address, r]));
    const cfg = this.opts.config;
    const pending = noticesDue(entry, state, now, cfg);
    if (pending.length === 0) return;
    const mark = () => {
      for (const p of pending) (p.t.notified ??= []).push(p.action);
    };
    // Never a bounce for a bounce (RFC 3461 §6.1 / RFC 5321 §4.5.5): the null sender gets no
    // notice. A failure is told once to the postmaster; a failed double bounce is dropped.
    let to = envelope.mailFrom;
    let level: 1 | 2 = 1;
    if (!to) {
      const failed = pending.filter((p) => p.action === 'failed');
      const pm = cfg.domains.local[0];
      if (failed.length === 0 || envelope.dsn === 2 || !pm) {
        logEvent(this.log, 'warn', 'queue.dsn.dropped', { qid: id, rcpts: pending.map((p) => p.t.rcpt), why: envelope.dsn === 2 ? 'double bounce failed' : 'null sender' });
        mark();
        return;
      }
      to = `postmaster@${pm}`;
      level = 2;
    }
    const report = (action: DsnAction) => pending.filter((p) => p.action === action);
    const groups = [report('failed'), report('delayed'), [...report('delivered'), ...report('relayed')]].filter((g) => g.length);
    for (const g of groups) {
      const recipients: DsnRecipient[] = g.map(({ t, action }) => {
        const r = byAddr.get(t.rcpt);
        return {
          rcpt: t.rcpt,
          final: t.address ?? t.user ?? t.rcpt,
          ...(r?.orcpt ? { orcpt: r.orcpt } : {}),
          action,
          status: action === 'failed' || action === 'delayed' ? (t.enhanced ?? (action === 'failed' ? '5.0.0' : '4.0.0')) : '2.0.0',
          ...(t.remoteMta ? { remoteMta: t.remoteMta } : {}),
          ...(t.last && action !== 'delivered' && action !== 'relayed' ? { diagnostic: t.last } : {}),
          ...(t.at ? { lastAttempt: t.at } : {}),
        };
      });
      const dsn = buildDsn({ reportingMta: cfg.hostname, queueId: id, envelope, message, recipients, retryUntil: envelope.receivedAt + cfg.outbound.lifetime });
      const dsnId = this.newId();
      const env: Envelope = {
        mailFrom: '',
        recipients: [{ address: to }],
        dsn: level,
        ...(dsnNeedsSmtputf8(envelope, recipients) ? { smtputf8: true } : {}),
        source: { listener: 'local', remoteAddress: '127.0.0.1', protocol: 'ESMTP' },
        receivedAt: Date.now(),
      };
      await this.accept(dsnId, env, dsn);
      logEvent(this.log, 'info', 'queue.dsn', { qid: id, dsn: dsnId, to, action: g[0]!.action, rcpts: g.map((x) => x.t.rcpt) });
    }
    mark();
  }

  // --- steering (postern queue, ETRN) ------------------------------------------------------

  async retry(id?: string, domain?: string, opts: { subdomains?: boolean } = {}): Promise<number> {
    this.opts.outbound?.resetBackoff();
    const want = domain?.toLowerCase();
    const matches = (d: string | undefined) => !!d && (d.toLowerCase() === want || (!!opts.subdomains && d.toLowerCase().endsWith(`.${want}`)));
    let n = 0;
    for (const e of this.known.values()) {
      if (id && e.id !== id) continue;
      let touched = false;
      for (const t of e.state?.targets ?? []) {
        if (domain && (t.kind !== 'remote' || !matches(t.domain))) continue;
        if (t.status === 'deferred' || t.status === 'held') {
          t.next = 0;
          if (t.status === 'held' && this.opts.outbound) t.status = 'pending';
          touched = true;
        }
      }
      if (touched || (!e.state && !domain)) {
        n++;
        this.reschedule(e);
      }
    }
    return n;
  }

  async remove(id: string): Promise<boolean> {
    const e = this.known.get(id);
    if (!e) return false;
    // From here no round may start: not from a timer, a retry, or a rerun asked for during the
    // round in progress, which is left to finish.
    e.cancelled = true;
    this.rerun.delete(id);
    this.unschedule(e);
    await this.running.get(id);
    if (!this.known.has(id)) return true; // finished meanwhile
    this.known.delete(id);
    await e.writing?.catch(() => undefined);
    await this.spool.remove(id, { durable: true });
    logEvent(this.log, 'info', 'queue.deleted', { qid: id });
    return true;
  }

  async bounce(id: string): Promise<boolean> {
    const e = this.known.get(id);
    if (!e || e.cancelled) return false;
    return this.exclusive(e, async () => {
      if (this.known.get(id) !== e) return true; // finished meanwhile
      // Never ran yet: work out its targets (without delivering) so each can be reported.
      if (!e.state) {
        const message = e.message ?? (await this.readMessage(e));
        if (message === null) return true;
        await this.plan(e, message);
      }
      this.failAll(e.state!);
      await this.checkpoint(e);
      e.checkExisting = true; // a state file exists now: the removal must take it too
      // The round after this one sends the notices and removes the entry.
      this.rerun.add(id);
      return true;
    });
  }

  /** Fails every open target (5.0.0, by the administrator). */
  private failAll(state: EntryState): void {
    for (const t of state.targets) {
      if (t.status === 'done' || t.status === 'failed') continue;
      t.status = 'failed';
      t.next = undefined;
      t.enhanced = '5.0.0';
      t.last = t.last ? `bounced by the administrator; last: ${t.last}` : 'bounced by the administrator';
      t.at = Date.now();
    }
  }

  /**
   * Runs `fn` with no delivery round of the entry running or starting meanwhile: waits for the
   * round in progress, takes the entry off the waiting list and its timer, and holds its place
   * in `running` while `fn` runs, so a timer, retry or ETRN that fires then only asks for a
   * round after it (`rerun`), as during a round.
   */
  private async exclusive<T>(entry: Entry, fn: () => Promise<T>): Promise<T> {
    for (let r = this.running.get(entry.id); r; r = this.running.get(entry.id)) await r.catch(() => undefined);
    this.unschedule(entry);
    const p = fn();
    this.running.set(entry.id, p.catch(() => undefined).then(() => undefined));
    try {
      return await p;
    } finally {
      this.afterRound(entry);
    }
  }

  async adopt(id: string): Promise<void> {
    if (this.known.has(id)) return;
    const { envelope } = await this.spool.read(id);
    const state = fromDisk(await this.spool.readState<EntryState>(id));
    const entry: Entry = { id, envelope, message: null, state, checkExisting: state !== null, entryFailures: 0 };
    this.known.set(id, entry);
    if (!this.stopped) this.enqueue(entry);
  }

  private async deliverTarget(entry: Entry, t: TargetState, message: Buffer): Promise<void> {
    const { id, envelope } = entry;
    try {
      if (entry.checkExisting || t.attempts > 0) {
        // The user may have been removed while the message waited: that is permanent.
        const u = await this.opts.directory.getUser(t.user!);
        if (!u) throw DeliveryErrors.unknownUser();
      }
      const d = await this.local.deliver({
        qid: id,
        sender: envelope.mailFrom,
        receivedAt: envelope.receivedAt,
        user: t.user!,
        rcpt: t.rcpt,
        folder: t.folder,
        message,
        checkExisting: entry.checkExisting,
        intents: this.intents(id),
      });
      t.status = 'done';
      t.next = undefined;
      this.delivered(id, t, d.destination, d.duplicate);
    } catch (e) {
      const err = asDeliveryError(e);
      t.last = err.message;
      t.enhanced = err.enhanced;
      t.at = Date.now();
      if (!err.temporary) {
        t.status = 'failed';
        this.logFailure(id, t, err, false);
        return;
      }
      t.attempts++;
      const next = Date.now() + withJitter(retryDelay(this.opts.config.outbound.retry, t.attempts));
      if (next - envelope.receivedAt > this.opts.config.outbound.lifetime) {
        t.status = 'failed';
        t.enhanced = '4.4.7';
        this.logFailure(id, t, err, false, 'lifetime exceeded');
        return;
      }
      t.status = 'deferred';
      t.next = next;
      this.logFailure(id, t, err, true);
    }
  }

  private intents(id: string): IntentStore {
    return { get: (key) => this.spool.readIntent(id, key), put: (key, v) => this.spool.writeIntent(id, key, v) };
  }

  /**
   * Intents of a delivery with no spool message file (before the reply): standalone records,
   * their keys added to `written` so the caller can remove them once the outcome is final.
   */
  private standaloneIntents(id: string, written: Set<string>): IntentStore {
    const spooled = this.intents(id);
    return {
      get: spooled.get,
      put: (key, v) => {
        written.add(key);
        return spooled.put(key, v);
      },
      standalone: true,
    };
  }

  /**
   * Removes standalone records whose outcome is final (by default not durably: a record that
   * outlives its append is harmless, the check at start finds the entry complete and drops it).
   */
  private async dropIntents(id: string, keys: Iterable<string>, opts: { durable?: boolean } = {}): Promise<void> {
    for (const key of keys) {
      await this.spool.removeIntent(id, key, opts).catch((e: unknown) => {
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'could not remove an intent record');
      });
    }
  }

  /** Routes one envelope recipient into targets, or the error to report for it. */
  private async expand(rcpt: EnvelopeRecipient): Promise<{ targets: TargetState[] } | { error: DeliveryError }> {
    let r;
    try {
      r = await this.router.route(rcpt.address);
    } catch (e) {
      return { error: DeliveryErrors.localError(e) };
    }
    if (r.status === 'unknown') return { error: DeliveryErrors.unknownUser() };
    if (r.status === 'invalid') return { error: new DeliveryError(false, 550, '5.1.3', 'Bad recipient address syntax') };
    const targets: TargetState[] = [];
    const seen = new Set<string>();
    // One local target per folder (Sieve fileinto :copy at the gateway asks for several).
    const folders = rcpt.folders?.length ? rcpt.folders.map((f) => (/^inbox$/i.test(f) ? undefined : f)) : [rcpt.folder];
    for (const t of r.targets) {
      for (const folder of t.kind === 'local' ? folders : [undefined]) {
        const ts = toTarget(rcpt, t, folder);
        if (seen.has(ts.key)) continue;
        seen.add(ts.key);
        targets.push(ts);
      }
    }
    return { targets };
  }

  // --- reporting ----------------------------------------------------------------------------

  private delivered(id: string, t: TargetState, destination: string, duplicate: boolean): void {
    if (duplicate) logEvent(this.log, 'info', 'delivery.duplicate_skipped', { qid: id, rcpt: t.rcpt, user: t.user, destination }, 'already delivered: by an earlier attempt, or for another recipient reaching the same mailbox folder');
    else logEvent(this.log, 'info', 'delivery.ok', { qid: id, rcpt: t.rcpt, user: t.user, destination });
    this.observe('delivered', { queueId: id, recipient: t.rcpt, destination });
  }

  private held(id: string, t: TargetState): void {
    // No next hop here: it is looked up when the recipient is sent.
    logEvent(this.log, 'info', 'queue.held', { qid: id, rcpt: t.address, domain: t.domain }, 'remote recipient held for the relay client');
  }

  private logFailure(id: string, t: TargetState, err: DeliveryError, temporary: boolean, why?: string): void {
    const fields = { qid: id, rcpt: t.rcpt, user: t.user, code: err.code, enhanced: err.enhanced, err: String(err.cause ?? err.message), attempts: t.attempts, ...(why ? { why } : {}) };
    if (temporary) {
      logEvent(this.log, 'warn', 'delivery.deferred', { ...fields, next: t.next });
      this.observe('deferred', { queueId: id, recipient: t.rcpt, detail: err.message });
    } else {
      // Permanent: the target is marked failed and this log line is the record (no DSN yet).
      logEvent(this.log, 'warn', 'delivery.failed', fields);
      this.observe('bounced', { queueId: id, recipient: t.rcpt, detail: err.message });
    }
  }

  private observe(stage: 'delivered' | 'deferred' | 'bounced', ev: { queueId: string; recipient: string; destination?: string; detail?: string }): void {
    this.opts.pipeline?.observe(stage, ev).catch(() => undefined);
  }
}

function toTarget(rcpt: EnvelopeRecipient, t: RouteTarget, folder: string | undefined): TargetState {
  if (t.kind === 'local') {
    return { key: `L${targetKey(t.user, folder)}`, rcpt: rcpt.address, kind: 'local', user: t.user, ...(folder ? { folder } : {}), status: 'pending', attempts: 0 };
  }
  // Not t.via: the next hop is looked up again at each attempt (destinations()).
  return { key: `R:${t.address.toLowerCase()}`, rcpt: rcpt.address, kind: 'remote', address: t.address, domain: t.domain, status: 'pending', attempts: 0 };
}

/**
 * A state as read from its file. Files of earlier builds kept each remote target's next hop
 * (`via`, a route's credentials in its URL); it would pin the target to a route since changed
 * or removed, so it is dropped, and the next write leaves it out.
 */
function fromDisk(state: EntryState | null): EntryState | null {
  for (const t of state?.targets ?? []) delete (t as TargetState & { via?: unknown }).via;
  return state;
}

function nextDue(entry: Entry, relaying: boolean, cfg: Config): number | null {
  if (!entry.state) return Date.now();
  let due: number | null = null;
  for (const t of entry.state.targets) {
    if (t.kind === 'remote' && !relaying) continue; // held for a transport that is not there
    if (t.status === 'pending' || (t.status === 'held' && relaying)) return Date.now();
    if (t.status === 'deferred') due = Math.min(due ?? Infinity, t.next ?? 0);
  }
  // Owed notices (an administrator's bounce, a delay warning coming due) also need a round.
  if (needsNotice(entry, entry.state, Date.now(), cfg)) return Date.now();
  const warnAt = entry.envelope.receivedAt + cfg.outbound.delay_warning;
  if (due !== null && warnAt > Date.now() && warnAt < due && entry.state.targets.some((t) => t.status === 'deferred' && wants(rcptOf(entry, t), 'DELAY'))) due = warnAt;
  return due;
}

function rcptOf(entry: Entry, t: TargetState): EnvelopeRecipient | undefined {
  return entry.envelope.recipients.find((r) => r.address === t.rcpt);
}

function isOpen(state: EntryState): boolean {
  return state.targets.some((t) => t.status !== 'done' && t.status !== 'failed');
}

/** The notices an entry owes now (dsn.ts decides the rules). */
function noticesDue(entry: Entry, state: EntryState, now: number, cfg: Config): { t: TargetState; action: DsnAction }[] {
  const out: { t: TargetState; action: DsnAction }[] = [];
  for (const t of state.targets) {
    const r = rcptOf(entry, t);
    const sent = t.notified ?? [];
    if (t.status === 'failed' && !sent.includes('failed') && wants(r, 'FAILURE')) out.push({ t, action: 'failed' });
    else if (t.status === 'deferred' && !sent.includes('delayed') && !sent.includes('failed') && now - entry.envelope.receivedAt >= cfg.outbound.delay_warning && wants(r, 'DELAY'))
      out.push({ t, action: 'delayed' });
    else if (t.status === 'done' && r?.notify?.includes('SUCCESS') && !sent.includes('delivered') && !sent.includes('relayed')) {
      // RFC 3461 §6.2: a DSN-capable next hop reports success itself.
      if (t.kind === 'local') out.push({ t, action: 'delivered' });
      else if (!t.nextHopDsn) out.push({ t, action: 'relayed' });
    }
  }
  // The null sender: only failures matter (for the postmaster, or dropped when that was the
  // double bounce itself); see `notify`.
  if (!entry.envelope.mailFrom) return out.filter((p) => p.action === 'failed');
  return out;
}

function needsNotice(entry: Entry, state: EntryState, now: number, cfg: Config): boolean {
  return noticesDue(entry, state, now, cfg).length > 0;
}

/** Where one transaction goes: a domain by MX, or a route's next hop, and its targets. */
interface Destination {
  domain: string;
  via: RemoteVia;
  targets: TargetState[];
}

function groupByDestination(targets: { t: TargetState; via: RemoteVia }[]): Destination[] {
  const groups = new Map<string, Destination>();
  for (const { t, via } of targets) {
    const key = destinationKey(t.domain ?? '', via);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { domain: t.domain ?? '', via, targets: [] }));
    g.targets.push(t);
  }
  return [...groups.values()];
}

/** Up to 10% more, so retries of a burst spread out. */
function withJitter(ms: number): number {
  return Math.round(ms * (1 + Math.random() * 0.1));
}

/** RFC 3461 §4: xtext encoding of an address for ORCPT. */
function xtext(s: string): string {
  return s.replace(/[^\x21-\x2a\x2c-\x3c\x3e-\x7e]/g, (c) => `+${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/**
 * What a target's delivery stored before the client has its reply: its copies (a failed Sieve
 * plan's earlier ones too), which a take-back removes, and, when it succeeded, the result that
 * is reported once the reply is certain.
 */
interface BeforeReply {
  t: TargetState;
  copies: StoredCopy[];
  delivered?: LocalDeliveryResult;
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function asDeliveryError(e: unknown): DeliveryError {
  return e instanceof DeliveryError ? e : DeliveryErrors.localError(e);
}

function outcome(recipient: EnvelopeRecipient, err: DeliveryError): RecipientOutcome {
  return { recipient, status: err.temporary ? 'deferred' : 'failed', code: err.code, enhanced: err.enhanced, text: err.text };
}
