// Per-user Sieve at final delivery (the "user rules" context, RFC 5228): before a message is
// stored into a local user's INBOX, the user's active script (managesieve/repository.ts,
// getActiveScript) runs and its actions become a delivery plan that local.ts performs:
//
//   keep / implicit keep / fileinto → one stored copy per folder, with its imap4flags (RFC 5232)
//       as Maildir info letters (maildir.ts). fileinto into a folder that does not exist, without
//       :create (RFC 5490 §3.2), stores into INBOX instead — RFC 5228 §4.1 lets an implementation
//       "save the message in the default mailbox", and that is what Pigeonhole does (it never
//       creates a mailbox unless asked, and never loses the message). With :create the folder is
//       made.
//   discard → nothing stored.
//   redirect (RFC 5228 §4.2) → queued through the queue's `accept` to the new address, envelope
//       sender unchanged, with "Delivered-To: <user>" prepended. Loop protection: when the
//       message already carries a Delivered-To of this user, the redirect is not done and the
//       message is kept in INBOX instead (nothing lost; `sieve.redirect.loop` is logged).
//   reject / ereject (RFC 5429) → a permanent DeliveryError 550 5.7.1 with the reason: LMTP
//       answers it to the client; a queued message gets the queue's DSN to the sender (RFC 3464,
//       RFC 5429 §2.1 allows a DSN in place of an MDN). Nothing is stored.
//   vacation (RFC 5230, RFC 3834) → a reply through `accept`, unless shouldSuppressVacation says
//       no (null or system sender, Auto-Submitted, List-*, Precedence bulk/list/junk, not
//       addressed to the user) or a reply to this sender (per :handle) went out within the
//       period: the key sieve:vacation:<hash> is claimed with SET NX and, once the reply is
//       queued, kept for the period (see below). The reply has a null envelope sender,
//       Auto-Submitted: auto-replied, In-Reply-To/References.
//
// Idempotence. Stored copies keep the (queue id, user, folder) idempotence of local.ts. Redirects
// are recorded in the store (sieve:sent:<qid>:<hash>, 30 days) once queued, so a retry of the
// delivery (a later folder write failed, a restart) does not send them twice; a crash between the
// queue write and the record sends that one redirect again (a duplicate rather than a loss).
// A message with a usable Message-ID (<left@right>) is also recorded per user and address
// (sieve:redirected:<hash of user, address, Message-ID, Resent-Message-ID, List-Id>, 12 hours;
// redirectedKey), much as Pigeonhole tracks redirect duplicates: an LMTP client that heard 4xx
// after the redirect was queued (a store that failed for now) sends the message again under a
// new queue id, and that copy is not redirected a second time (`sieve.redirect.duplicate`), nor
// is the same message arriving again. Since another message may reuse a Message-ID, a redirect
// skipped for that reason still leaves the message somewhere: when the plan would store nothing
// else (no :copy, keep or fileinto), it goes to INBOX. Records are read, then written: two
// deliveries of one message at the same moment may both redirect (a duplicate, not a loss).
// Without a usable Message-ID two deliveries cannot be told apart from two messages, and each is
// redirected.
// Vacation replies are covered by their per-period key, in two steps. Before the reply is queued
// the delivery claims the key (SET NX) with `pending:<qid>` for a short while
// (VACATION_PENDING_TTL_MS); once the reply is queued it writes `sent:<qid>` for the whole
// period. Queueing that fails removes the claim. A crash between the two leaves only the short
// claim: the retry of that delivery (same queue id) sends the reply, and other messages from the
// sender are answered again once the claim runs out, so a crash costs at most a duplicate reply,
// never the period's only one. A claim of another queue id (a delivery of another message from
// the sender, now) or a key from an earlier build (a time stamp) means replied.
//
// Scripts run only for plain deliveries (no folder asked for by the gateway: a quarantined
// message is not re-filed by its user). A script that no longer compiles is logged
// (sieve.user.compile_error) and the message goes to INBOX; a runtime error keeps it in INBOX
// (RFC 5228 §2.10.6). Header edits (editheader) apply to every stored copy and to redirects.
// The duplicate test's memory is the store (sieve:duplicate:<hash>, TTL = :seconds).
// Config keys: `sieve` (vacation periods, limits), `hostname`.
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Store } from '../store/store.js';
import type { Envelope } from '../queue/envelope.js';
import { compileOptions, type SieveConfig } from '../sieve/config.js';
import type { SieveAction } from '../sieve/actions.js';
import { compile, type CompiledScript } from '../sieve/compile.js';
import { run, type SieveHost, type SieveResult } from '../sieve/interpret.js';
import { headersNamed, splitMessage, unfold, type HeaderField } from '../sieve/message.js';
import { shouldSuppressVacation } from '../sieve/extensions/vacation.js';
import { getActiveScript } from '../managesieve/repository.js';
import { logEvent } from '../log/logger.js';
import { DeliveryError } from './errors.js';

/** How the delivery side queues a message it makes (redirect, vacation); resolves with its id. */
export type Submit = (envelope: Envelope, message: Buffer) => Promise<string>;

export interface UserSieveDeps {
  store: Store;
  submit?: Submit;
  log?: Logger;
  sieve: SieveConfig;
  hostname: string;
}

export interface SieveStore {
  /** undefined: INBOX. */
  folder?: string;
  flags: string[];
  /** fileinto :create (RFC 5490). */
  create: boolean;
}

export interface SievePlan {
  /** Where copies go; [] means discard. */
  stores: SieveStore[];
  /** The message to store (header edits applied; CRLF as spooled). */
  message: Buffer;
  /** Short text for the destination field and the log. */
  summary: string;
}

export interface SieveRequest {
  qid: string;
  sender: string;
  user: string;
  /** The envelope recipient as given (before alias/subaddress resolution). */
  rcpt: string;
  message: Buffer;
  mailboxExists(folder: string): Promise<boolean>;
  /** False when the name cannot be a folder on disk (fileinto :create then keeps in INBOX). */
  folderValid(folder: string): boolean;
}

const h = (...parts: string[]) => createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 32);
const SENT_TTL_MS = 30 * 86400_000;
const REDIRECT_DUPLICATE_TTL_MS = 12 * 3600_000;
/** How long a vacation claim stands before its reply is known to be queued (see the header). */
export const VACATION_PENDING_TTL_MS = 10 * 60_000;
const MAX_CACHE = 1000;

/**
 * The record of one message redirected by one user to one address, or undefined when the message
 * cannot be told apart from others: no Message-ID, or one without the <left@right> shape (an
 * empty or constant one would make different messages duplicates). Resent-Message-ID (a resend,
 * RFC 5322 §3.6.6) and List-Id (the copy a list sends) make another message.
 */
function redirectedKey(headers: HeaderField[], user: string, to: string): string | undefined {
  const value = (name: string) => headersNamed(headers, name).map((f) => unfold(f.raw).trim()).find(Boolean) ?? '';
  const messageId = value('message-id');
  if (!/^<[^<>\s@]+@[^<>\s@]+>$/.test(messageId)) return undefined;
  return `sieve:redirected:${h(user, to, messageId, value('resent-message-id'), value('list-id'))}`;
}

export class UserSieve {
  private readonly cache = new Map<string, CompiledScript | null>();

  constructor(private readonly deps: UserSieveDeps) {}

  private compiled(text: string, user: string, name: string): CompiledScript | null {
    const key = h(text);
    if (this.cache.has(key)) return this.cache.get(key)!;
    const r = compile(text, compileOptions(this.deps.sieve));
    const c = r.ok ? r.script : null;
    if (!r.ok && this.deps.log) logEvent(this.deps.log, 'warn', 'sieve.user.compile_error', { user, script: name, errors: r.errors.slice(0, 5) }, 'active script does not compile; delivering to INBOX');
    if (this.cache.size >= MAX_CACHE) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, c);
    return c;
  }

  /** The delivery plan for one message and user, or null when the user has no usable script. */
  async plan(req: SieveRequest): Promise<SievePlan | null> {
    const active = await getActiveScript(this.deps.store, req.user);
    if (!active) return null;
    const script = this.compiled(active.script, req.user, active.name);
    if (!script) return null;
    const store = this.deps.store;
    const host: SieveHost = {
      mailboxExists: (name) => req.mailboxExists(name),
      duplicate: async ({ handle, id, seconds, last }) => {
        const key = `sieve:duplicate:${h(req.user.toLowerCase(), handle, id)}`;
        // The record names the message (queue id) that made it: a retry of that same message
        // after a temporary failure is not "a previous message" (RFC 7352 §3), or the retry of
        // `if duplicate { discard; }` would throw the message away.
        if (await store.set(key, req.qid, { ttlMs: seconds * 1000, ifAbsent: true })) return false;
        const first = await store.get(key);
        if (first === req.qid) return false;
        // RFC 7352 §3.4 :last: the period counts from the last time the id was seen.
        if (last) await store.set(key, first ?? req.qid, { ttlMs: seconds * 1000 });
        return true;
      },
      include: async (name, location) => (location === 'global' ? store.hget('sieve:rules', name) : store.hget(`sieve:scripts:${req.user}`, name)).then((t) => t ?? undefined),
    };
    const r = await run(script, req.message, { from: req.sender, to: req.rcpt }, host, {
      config: this.deps.sieve,
      userAddresses: [...new Set([req.user, req.rcpt])],
      environment: { location: 'MDA', phase: 'during', domain: req.user.slice(req.user.lastIndexOf('@') + 1), host: this.deps.hostname },
    });
    if (r.status === 'runtime-error' && this.deps.log) logEvent(this.deps.log, 'warn', 'sieve.user.runtime_error', { user: req.user, qid: req.qid, script: active.name, errors: r.errors }, 'user script failed; implicit keep');
    return this.perform(req, r, active.name);
  }

  private async perform(req: SieveRequest, r: SieveResult, scriptName: string): Promise<SievePlan> {
    const log = this.deps.log;
    // RFC 5703 replace/enclose give the whole new message; otherwise only the header may change.
    const message = r.message ?? (r.stored || r.actions.some((a) => a.type === 'redirect') ? renderHeaders(req.message, r.headers, r.stored !== undefined) : req.message);
    // RFC 5429: a refusal stores nothing; the reason goes back to the sender (LMTP reply or DSN).
    const refusal = r.actions.find((a): a is Extract<SieveAction, { type: 'reject' | 'ereject' }> => a.type === 'reject' || a.type === 'ereject');
    if (refusal) {
      const reason = refusal.reason.replace(/\s+/g, ' ').trim().slice(0, 400) || 'Message refused';
      if (log) logEvent(log, 'info', 'sieve.user.reject', { user: req.user, qid: req.qid, script: scriptName }, reason);
      throw new DeliveryError(false, 550, '5.7.1', reason);
    }
    const stores: SieveStore[] = [];
    const addStore = (folder: string | undefined, flags: string[], create: boolean) => {
      const f = folder === undefined || /^inbox$/i.test(folder) ? undefined : folder;
      const prev = stores.find((s) => s.folder === f);
      if (prev) prev.flags = [...new Set([...prev.flags, ...flags])];
      else stores.push({ ...(f !== undefined ? { folder: f } : {}), flags, create });
    };
    const done: string[] = [];
    // A redirect skipped as a duplicate, without :copy: INBOX unless the plan stores elsewhere.
    let skippedRedirect = false;
    for (const a of r.actions) {
      if (a.type === 'keep') addStore(undefined, a.flags, false);
      else if (a.type === 'fileinto') {
        // A folder that cannot be used goes to INBOX, as a fileinto that fails (RFC 5228
        // §2.10.6): never an error after other copies were stored, which would bounce a
        // message already delivered.
        const exists = /^inbox$/i.test(a.mailbox) || (a.create ? req.folderValid(a.mailbox) : await req.mailboxExists(a.mailbox));
        if (!exists && log) {
          const why = a.create ? 'folder name is not valid here; stored in INBOX' : 'folder does not exist and :create was not given; stored in INBOX';
          logEvent(log, 'info', 'sieve.user.fileinto_missing', { user: req.user, qid: req.qid, folder: a.mailbox }, why);
        }
        addStore(exists ? a.mailbox : undefined, a.flags, a.create);
      } else if (a.type === 'redirect') {
        const outcome = await this.redirect(req, a.address, message);
        if (outcome === 'sent') done.push(`redirect ${a.address}`);
        else if (outcome === 'loop') {
          if (!a.copy) addStore(undefined, r.implicitKeepFlags, false); // loop: keep instead
        } else {
          done.push(`redirect ${a.address} skipped (duplicate)`);
          if (!a.copy) skippedRedirect = true;
        }
      } else if (a.type === 'vacation') {
        const sent = await this.vacation(req, a);
        done.push(sent ? 'vacation sent' : 'vacation suppressed');
      }
    }
    if (r.implicitKeep || (skippedRedirect && stores.length === 0)) addStore(undefined, r.implicitKeepFlags, false);
    const summary = [...stores.map((s) => `store ${s.folder ?? 'INBOX'}`), ...done, ...(stores.length === 0 ? ['discard'] : [])].join(', ');
    return { stores, message, summary };
  }

  /**
   * 'sent' when queued (now or by an earlier attempt of this delivery); 'loop' and 'duplicate'
   * when not done. Then a redirect without :copy keeps the message instead: always after a
   * loop, and after a duplicate when the plan stores it nowhere else (perform).
   */
  private async redirect(req: SieveRequest, address: string, message: Buffer): Promise<'sent' | 'loop' | 'duplicate'> {
    const { headers } = splitMessage(req.message);
    const user = req.user.toLowerCase();
    const log = this.deps.log;
    if (headersNamed(headers, 'delivered-to').some((f) => unfold(f.raw).toLowerCase() === user)) {
      if (log) logEvent(log, 'warn', 'sieve.redirect.loop', { user: req.user, qid: req.qid, to: address }, 'message already delivered to this user once; not redirected');
      return 'loop';
    }
    const submit = this.need();
    const to = address.toLowerCase();
    const key = `sieve:sent:${req.qid}:${h(user, 'redirect', to)}`;
    // A retry of this delivery does what its first attempt did. Older builds wrote '1' before
    // queueing, so '1' may stand for a redirect never made: not sent again, but kept, as a
    // duplicate is.
    const earlier = await this.deps.store.get(key);
    if (earlier === 'sent') return 'sent';
    if (earlier !== null) return 'duplicate';
    const sameMessage = redirectedKey(headers, user, to);
    const first = sameMessage ? await this.deps.store.get(sameMessage) : null;
    if (first !== null) {
      await this.deps.store.set(key, 'duplicate', { ttlMs: SENT_TTL_MS });
      if (log) logEvent(log, 'info', 'sieve.redirect.duplicate', { user: req.user, qid: req.qid, to: address, firstQid: first }, 'this message was redirected to this address already; kept instead');
      return 'duplicate';
    }
    const bytes = Buffer.concat([Buffer.from(`Delivered-To: ${req.user.replace(/[\r\n]/g, '')}\r\n`), message]);
    const id = await submit(localEnvelope(req.sender, address), bytes);
    if (log) logEvent(log, 'info', 'sieve.redirect', { user: req.user, qid: req.qid, to: address, newQid: id });
    // Recorded only once queued, so a record never stands for a redirect that was not made. When
    // these writes fail (or the process dies first), a retry or a resend redirects once more.
    try {
      // Issued together: one batch for the store.
      await Promise.all([
        this.deps.store.set(key, 'sent', { ttlMs: SENT_TTL_MS }),
        ...(sameMessage ? [this.deps.store.set(sameMessage, id, { ttlMs: REDIRECT_DUPLICATE_TTL_MS })] : []),
      ]);
    } catch (err) {
      if (log) logEvent(log, 'warn', 'sieve.redirect.unrecorded', { user: req.user, qid: req.qid, to: address, newQid: id, err }, 'redirect queued, but not recorded: a retry may send it again');
    }
    return 'sent';
  }

  private async vacation(req: SieveRequest, a: Extract<SieveAction, { type: 'vacation' }>): Promise<boolean> {
    const log = this.deps.log;
    const { headers } = splitMessage(req.message);
    const mine = [...new Set([req.user, req.rcpt, ...a.addresses])];
    const why = shouldSuppressVacation(headers, { from: req.sender, to: req.rcpt }, mine);
    if (why) {
      if (log) logEvent(log, 'info', 'sieve.vacation.suppressed', { user: req.user, qid: req.qid, why });
      return false;
    }
    const sender = req.sender.toLowerCase();
    // RFC 5230 §4.2: without :handle, replies with different text count as different vacations.
    const handle = a.handle ?? h(a.reason, a.subject ?? '', a.from ?? '', String(a.mime));
    const key = `sieve:vacation:${h(req.user.toLowerCase(), handle, sender)}`;
    const periodMs = a.seconds * 1000;
    const claim = `pending:${req.qid}`;
    if (!(await this.deps.store.set(key, claim, { ttlMs: Math.min(periodMs, VACATION_PENDING_TTL_MS), ifAbsent: true }))) {
      const held = await this.deps.store.get(key);
      // This delivery's own earlier attempt: done if it recorded the reply as queued; if it only
      // claimed (it died, or a later step failed, before recording), the reply goes now. A
      // record that ran out between the two reads is taken as replied: at most once.
      if (held === `sent:${req.qid}`) return true;
      if (held !== claim) {
        if (log) logEvent(log, 'info', 'sieve.vacation.suppressed', { user: req.user, qid: req.qid, why: 'already-replied' });
        return false;
      }
    }
    const reply = vacationReply(a, headers, req.user, req.sender, this.deps.hostname);
    let id: string;
    try {
      id = await this.need()(localEnvelope('', req.sender), reply);
    } catch (e) {
      await this.deps.store.del(key).catch(() => 0);
      throw e;
    }
    if (log) logEvent(log, 'info', 'sieve.vacation.sent', { user: req.user, qid: req.qid, to: req.sender, newQid: id });
    try {
      await this.deps.store.set(key, `sent:${req.qid}`, { ttlMs: periodMs });
    } catch (err) {
      if (log) logEvent(log, 'warn', 'sieve.vacation.unrecorded', { user: req.user, qid: req.qid, to: req.sender, newQid: id, err }, 'vacation reply queued, but the period not recorded: the sender may get another reply once the claim runs out');
    }
    return true;
  }

  private need(): Submit {
    if (!this.deps.submit) throw new DeliveryError(true, 451, '4.3.0', 'Local delivery error, try again later', { cause: new Error('no queue to submit Sieve messages') });
    return this.deps.submit;
  }
}

function localEnvelope(from: string, to: string): Envelope {
  return {
    mailFrom: from,
    recipients: [{ address: to }],
    source: { listener: 'local', remoteAddress: '127.0.0.1', protocol: 'LOCAL' },
    receivedAt: Date.now(),
  };
}

/** The message with its header block replaced by `headers` (Sieve's edited list), CRLF ends. */
export function renderHeaders(raw: Buffer, headers: HeaderField[], edited: boolean): Buffer {
  if (!edited) return raw;
  const { body } = splitMessage(raw);
  const head = headers.map((f) => `${f.name}:${f.raw.replace(/\r?\n/g, '\r\n')}\r\n`).join('');
  return Buffer.concat([Buffer.from(head + '\r\n', 'utf8'), body]);
}

const encodeWord = (s: string) => (/^[\x20-\x7e]*$/.test(s) ? s : `=?UTF-8?B?${Buffer.from(s, 'utf8').toString('base64')}?=`);
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ');

/** RFC 5230 §5 and RFC 3834 §3: the reply to `sender` for the vacation action `a`. */
export function vacationReply(a: Extract<SieveAction, { type: 'vacation' }>, orig: HeaderField[], user: string, sender: string, hostname: string): Buffer {
  const first = (n: string) => {
    const f = headersNamed(orig, n)[0];
    return f ? unfold(f.raw) : undefined;
  };
  const msgId = first('message-id');
  const refs = first('references');
  const origSubject = first('subject') ?? '';
  // RFC 5230 §4.6: the default subject is "Auto: " and the original subject.
  const subject = a.subject ?? `Auto: ${origSubject}`;
  const lines = [
    `From: ${oneLine(a.from ?? user)}`,
    `To: ${oneLine(sender)}`,
    `Subject: ${encodeWord(oneLine(subject))}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${randomBytes(12).toString('hex')}@${hostname}>`,
    ...(msgId ? [`In-Reply-To: ${oneLine(msgId)}`, `References: ${oneLine(refs ? `${refs} ${msgId}` : msgId)}`] : []),
    // RFC 3834 §5: marks the reply, so that other responders do not answer it.
    'Auto-Submitted: auto-replied (vacation)',
    'Precedence: bulk',
    'MIME-Version: 1.0',
  ];
  // RFC 5230 §5.8 :mime: the reason is a whole MIME entity (its own header fields, then body).
  const body = a.mime
    ? a.reason.replace(/\r?\n/g, '\r\n')
    : `Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${a.reason.replace(/\r?\n/g, '\r\n')}`;
  return Buffer.from(`${lines.join('\r\n')}\r\n${body}${body.endsWith('\r\n') ? '' : '\r\n'}`, 'utf8');
}
