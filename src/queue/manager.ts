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
// Temporary failures retry after `outbound.retry` waits; after `outbound.lifetime` the target is
// failed. Permanent failures (the user no longer exists, a bad folder name) mark the target
// failed and log `delivery.failed`; no bounce message is sent yet — DSNs (RFC 3464) are the job of
// a later module, which will read failed targets here. Remote targets are HELD (`queue.held`):
// kept in the spool, with their next hop, through restarts, for the SMTP/LMTP client to come.
//
// Config keys: `data_dir`, `hostname`, `mailbox.*`, `domains.local`, `routes`, `outbound.retry`,
// `outbound.lifetime`.
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { Store } from '../store/store.js';
import type { Pipeline } from '../pipeline/types.js';
import type { Envelope, EnvelopeRecipient } from './envelope.js';
import type { MessageQueue, RecipientOutcome } from './queue.js';
import { logEvent } from '../log/logger.js';
import { DirSyncer } from './dir-sync.js';
import { Spool } from './spool.js';
import { newQueueId } from './queue-id.js';
import { retryDelay } from './backoff.js';
import { createRouter, type RemoteVia, type Router, type RouteTarget } from '../delivery/router.js';
import { LocalDelivery, targetKey, type IntentStore } from '../delivery/local.js';
import { DeliveryError, DeliveryErrors } from '../delivery/errors.js';
import type { MboxOptions } from '../delivery/mbox.js';

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
  via?: RemoteVia;
  status: TargetStatus;
  /** Failed attempts so far. */
  attempts: number;
  /** When a deferred target is due (ms since the epoch). */
  next?: number;
  /** Last error or reply text. */
  last?: string;
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
}

export interface ManagedQueue extends MessageQueue {
  /** Resolves when nothing is waiting to run or running (timers for later retries aside). */
  idle(): Promise<void>;
  /** Ids of spooled entries known in memory, with their targets (for `postern queue list`). */
  entries(): { id: string; envelope: Envelope; targets: TargetState[] | null }[];
  readonly spool: Spool;
}

const MAX_TIMER = 2 ** 31 - 1;

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
  private readonly concurrency: number;
  private initP: Promise<void> | null = null;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: QueueOptions) {
    this.spool = new Spool(opts.config.data_dir, this.syncer);
    this.router = createRouter({ config: opts.config, directory: opts.directory });
    this.local = new LocalDelivery(opts.config, this.syncer, opts.mbox);
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
    await this.spool.accept(id, envelope, message);
    logEvent(this.log, 'debug', 'spool.commit', { qid: id, size: message.length, rcpts: envelope.recipients.length });
    const entry: Entry = { id, envelope, message, state: null, checkExisting: false, entryFailures: 0 };
    this.known.set(id, entry);
    if (!this.stopped) this.enqueue(entry);
  }

  async deliverNow(id: string, envelope: Envelope, message: Buffer): Promise<RecipientOutcome[]> {
    await this.init();
    const outcomes: RecipientOutcome[] = [];
    const spoolRcpts: EnvelopeRecipient[] = [];
    const spoolTargets = new Map<string, TargetState>();
    const pendingOutcome: number[] = [];
    for (const rcpt of envelope.recipients) {
      const r = await this.expand(rcpt);
      if ('error' in r) {
        outcomes.push(outcome(rcpt, r.error));
        continue;
      }
      const results = await Promise.all(
        r.targets.map(async (t) => {
          if (t.kind !== 'local') return { t, ok: true as const };
          try {
            const d = await this.local.deliver({ qid: id, sender: envelope.mailFrom, receivedAt: envelope.receivedAt, user: t.user!, folder: t.folder, message, checkExisting: false });
            this.delivered(id, t, d.destination, d.duplicate);
            return { t, ok: true as const };
          } catch (e) {
            return { t, ok: false as const, err: asDeliveryError(e) };
          }
        }),
      );
      const anyOk = results.some((x) => x.ok);
      if (!anyOk) {
        // Nothing of this recipient went anywhere: report the first failure; the client retries.
        const err = results.map((x) => (x.ok ? null : x.err)).find((e) => e && e.temporary) ?? (results[0] as { err: DeliveryError }).err;
        for (const x of results) if (!x.ok) this.logFailure(id, x.t, x.err, false);
        outcomes.push(outcome(rcpt, err));
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
          this.logFailure(id, t, x.err, true);
        } else {
          t.status = 'failed';
          t.last = x.err.message;
          this.logFailure(id, t, x.err, false);
        }
        if (!spoolTargets.has(t.key)) spoolTargets.set(t.key, t);
      }
      if (spooled) {
        spoolRcpts.push(rcpt);
        pendingOutcome.push(outcomes.length);
        outcomes.push({ recipient: rcpt, status: 'queued', code: 250, enhanced: '2.0.0', text: `Queued as ${id}` });
      } else {
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
        await this.spool.writeState(id, state);
      } catch (e) {
        logEvent(this.log, 'error', 'spool.error', { qid: id, err: String(e) }, 'could not spool LMTP recipients');
        for (const i of pendingOutcome) outcomes[i] = outcome(outcomes[i]!.recipient, DeliveryErrors.localError(e));
        return outcomes;
      }
      const entry: Entry = { id, envelope: env, message: null, state, checkExisting: true, entryFailures: 0 };
      this.known.set(id, entry);
      for (const t of targets) if (t.status === 'held') this.held(id, t);
      this.reschedule(entry);
    }
    return outcomes;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.init();
    const ids = await this.spool.list();
    let resumed = 0;
    const firstRounds: Promise<void>[] = [];
    for (const id of ids) {
      if (this.known.has(id)) continue;
      let entry: Entry;
      try {
        const { envelope } = await this.spool.read(id);
        const state = await this.spool.readState<EntryState>(id);
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
        this.reschedule(entry);
      }
    }
    await Promise.all(firstRounds);
    if (resumed) logEvent(this.log, 'info', 'spool.recover', { entries: resumed }, 'resumed spooled messages');
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
    if (this.stopped || this.running.has(entry.id) || this.waiting.includes(entry)) return;
    this.waiting.push(entry);
    this.pump();
  }

  private pump(): void {
    while (this.running.size < this.concurrency && this.waiting.length) {
      const entry = this.waiting.shift()!;
      const p = this.runEntry(entry).finally(() => {
        this.running.delete(entry.id);
        this.pump();
        this.notifyIdle();
      });
      this.running.set(entry.id, p);
    }
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
    if (this.stopped) return;
    const due = nextDue(entry);
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
      const message = entry.message ?? (await this.spool.read(id)).message;
      if (!entry.state) {
        const targets: TargetState[] = [];
        const seen = new Set<string>();
        for (const rcpt of entry.envelope.recipients) {
          const r = await this.expand(rcpt);
          if ('error' in r) {
            if (r.error.temporary) throw r.error; // directory trouble: retry the whole entry
            const t: TargetState = { key: `X:${rcpt.address}`, rcpt: rcpt.address, kind: 'local', status: 'failed', attempts: 0, last: r.error.message };
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
      }
      const before = JSON.stringify(entry.state);
      const now = Date.now();
      await Promise.all(
        entry.state.targets.map(async (t) => {
          if (t.kind === 'remote') {
            if (t.status === 'pending') {
              t.status = 'held';
              this.held(id, t);
            }
            return;
          }
          if (t.status === 'pending' || (t.status === 'deferred' && (t.next ?? 0) <= now)) await this.deliverTarget(entry, t, message);
        }),
      );
      entry.entryFailures = 0;
      const open = entry.state.targets.some((t) => t.status !== 'done' && t.status !== 'failed');
      if (!open) {
        // A fresh entry finished in its first round never had a state file.
        await this.spool.remove(id, { hasState: entry.checkExisting });
        this.known.delete(id);
        return;
      }
      if (JSON.stringify(entry.state) !== before || !entry.checkExisting) await this.spool.writeState(id, entry.state);
      entry.checkExisting = true;
      entry.message = null;
      this.reschedule(entry);
    } catch (e) {
      // Whole-entry trouble (directory down, spool unreadable, state not writable): retry later.
      entry.entryFailures++;
      entry.checkExisting = true;
      entry.message = null;
      entry.state = entry.state && (await this.spool.readState<EntryState>(id).catch(() => null));
      const wait = retryDelay(this.opts.config.outbound.retry, entry.entryFailures);
      logEvent(this.log, 'warn', 'delivery.deferred', { qid: id, err: String(e), retryInMs: wait }, 'delivery round failed');
      if (!this.stopped) {
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          this.enqueue(entry);
        }, Math.min(wait, MAX_TIMER));
        entry.timer.unref();
      }
    }
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
      if (!err.temporary) {
        t.status = 'failed';
        this.logFailure(id, t, err, false);
        return;
      }
      t.attempts++;
      const next = Date.now() + retryDelay(this.opts.config.outbound.retry, t.attempts);
      if (next - envelope.receivedAt > this.opts.config.outbound.lifetime) {
        t.status = 'failed';
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
    for (const t of r.targets) {
      const ts = toTarget(rcpt, t);
      if (seen.has(ts.key)) continue;
      seen.add(ts.key);
      targets.push(ts);
    }
    return { targets };
  }

  // --- reporting ----------------------------------------------------------------------------

  private delivered(id: string, t: TargetState, destination: string, duplicate: boolean): void {
    if (duplicate) logEvent(this.log, 'info', 'delivery.duplicate_skipped', { qid: id, rcpt: t.rcpt, user: t.user, destination }, 'already delivered before a restart');
    else logEvent(this.log, 'info', 'delivery.ok', { qid: id, rcpt: t.rcpt, user: t.user, destination });
    this.observe('delivered', { queueId: id, recipient: t.rcpt, destination });
  }

  private held(id: string, t: TargetState): void {
    const via = t.via?.type === 'route' ? t.via.nexthop : 'mx';
    logEvent(this.log, 'info', 'queue.held', { qid: id, rcpt: t.address, via }, 'remote recipient held for the relay client');
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

function toTarget(rcpt: EnvelopeRecipient, t: RouteTarget): TargetState {
  if (t.kind === 'local') {
    const folder = rcpt.folder;
    return { key: `L${targetKey(t.user, folder)}`, rcpt: rcpt.address, kind: 'local', user: t.user, ...(folder ? { folder } : {}), status: 'pending', attempts: 0 };
  }
  return { key: `R:${t.address.toLowerCase()}`, rcpt: rcpt.address, kind: 'remote', address: t.address, domain: t.domain, via: t.via, status: 'pending', attempts: 0 };
}

function nextDue(entry: Entry): number | null {
  if (!entry.state) return Date.now();
  let due: number | null = null;
  for (const t of entry.state.targets) {
    if (t.kind !== 'local') continue;
    if (t.status === 'pending') return Date.now();
    if (t.status === 'deferred') due = Math.min(due ?? Infinity, t.next ?? 0);
  }
  return due;
}

function asDeliveryError(e: unknown): DeliveryError {
  return e instanceof DeliveryError ? e : DeliveryErrors.localError(e);
}

function outcome(recipient: EnvelopeRecipient, err: DeliveryError): RecipientOutcome {
  return { recipient, status: err.temporary ? 'deferred' : 'failed', code: err.code, enhanced: err.enhanced, text: err.text };
}
