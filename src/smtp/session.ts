// Turns smtp-server's protocol events into pipeline stages and queue calls, per listener:
//
//   connect (limits, `connect` stage, greeting delay) → HELO/EHLO/LHLO (`helo`) → [STARTTLS] →
//   [AUTH (`auth`; accept = success, anything else 535 5.7.8)] → MAIL (queue id, `mail`) →
//   RCPT* (address syntax, `rcpt`, then the core relay policy) → DATA (DataGuard, Received,
//   `data` then `queue`, queue.accept / LMTP deliverNow) → one `smtp.transaction` log line.
//
// Core relay policy (never an open relay, whatever the chain holds; ARCHITECTURE.md): a recipient
// in a local domain without address tricks is checked against the directory (unknown → 550 5.1.1);
// any other recipient (foreign domain, or any trick from address.ts) is accepted only when the
// session may relay (trusted network from relay.networks, or authenticated), a plugin returned
// `accept` for it, or — for a trick-free address — its domain has a route (`routes`, exact or a
// `.sub.example` key); else 554 5.7.1.
//
// Standards: RFC 5321 (§3.1 greeting, §4.1.1 commands, §4.4 trace, §4.5.3 limits), RFC 2033
// (LMTP: one reply per recipient after DATA), RFC 4954 (AUTH), RFC 3461 (DSN parameters kept in
// the envelope), RFC 6531 (SMTPUTF8), RFC 1870 (SIZE).
// Config keys: hostname, smtp.* (max_message_size, max_line_length, bare_newline, greeting_delay,
// max_connections, max_connections_per_ip), relay.networks, routes.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { MessageAccess, SessionInfo, Stage, TransactionInfo } from '../pipeline/plugin.js';
import type { Pipeline, StageResult, TraceEntry } from '../pipeline/types.js';
import type { Verdict } from '../pipeline/verdict.js';
import type { Envelope, EnvelopeRecipient, ListenerKind } from '../queue/envelope.js';
import type { MessageQueue, RecipientOutcome } from '../queue/queue.js';
import { AddressError, parseAddress } from '../address/address.js';
import { inRanges, parseRange, type Range } from '../address/cidr.js';
import { RouteTable } from '../delivery/routes.js';
import { logEvent } from '../log/logger.js';
import { DataGuard, type DataViolation } from './data-guard.js';
import type { MailParams, RcptParams } from './params.js';
import { receivedHeader, withKeyword } from './received.js';
import { classMatches, Replies, replyFromVerdict, SmtpReply, type EnhancedCode } from './replies.js';
import type { ConnectionController, ConnectionPolicy, PosternConnection } from './connection.js';

export type CreatedMessage = MessageAccess & { render(): Buffer };

export interface SmtpDeps {
  config: Config;
  log: Logger;
  pipeline: Pipeline;
  directory: Directory;
  queue: MessageQueue;
  tls: { key: Buffer | string; cert: Buffer | string };
  /** Wraps the received bytes for the data/queue stages; render() gives the bytes to spool. */
  createMessage: (raw: Buffer) => CreatedMessage;
}

/** Connection counts shared by every listener (smtp.max_connections and _per_ip). */
export class ConnectionCounter {
  total = 0;
  private byIp = new Map<string, number>();
  add(ip: string): void {
    this.total++;
    this.byIp.set(ip, (this.byIp.get(ip) ?? 0) + 1);
  }
  remove(ip: string): void {
    this.total = Math.max(0, this.total - 1);
    const n = (this.byIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.byIp.delete(ip);
    else this.byIp.set(ip, n);
  }
  of(ip: string): number {
    return this.byIp.get(ip) ?? 0;
  }
}

interface Tx {
  id: string;
  started: number;
  envelope: Envelope;
  notes: Map<string, Record<string, unknown>>;
  trace: TraceEntry[];
  /** Accepted recipients keyed as smtp-server keys rcptTo (lower-cased as given), in RCPT order. */
  rcpts: Map<string, EnvelopeRecipient>;
}

interface ConnState {
  conn: PosternConnection;
  info: SessionInfo;
  /** The connection's logger: the transaction's (with its qid) while one is open. */
  log: Logger;
  /** The connection's own logger, parent of each transaction's. */
  connLog: Logger;
  notes: Map<string, Record<string, unknown>>;
  abort: AbortController;
  counted: boolean;
  ehlo: boolean;
  tx?: Tx;
  pendingMail?: MailParams;
  pendingRcpt?: RcptParams;
}

function isAscii(s: string): boolean {
  return /^[\x20-\x7e]*$/.test(s);
}

function copyNotes(notes: Map<string, Record<string, unknown>>): Map<string, Record<string, unknown>> {
  return new Map([...notes].map(([k, v]) => [k, { ...v }]));
}

function violationReply(v: DataViolation): SmtpReply {
  switch (v) {
    case 'too-big':
      return Replies.messageTooBig();
    case 'bare-newline':
      return Replies.bareNewline();
    case 'nul':
      return Replies.nulInData();
    case 'line-too-long':
      return Replies.dataLineTooLong();
  }
}

/** One listener's session logic; implements the callbacks smtp-server and our connection call. */
export class SessionController implements ConnectionController {
  private readonly states = new WeakMap<object, ConnState>();
  private readonly trustedNetworks: Range[];
  private readonly routes: RouteTable;

  constructor(
    private readonly deps: SmtpDeps,
    readonly kind: ListenerKind,
    readonly policy: ConnectionPolicy,
    private readonly counter: ConnectionCounter,
  ) {
    // relay.networks is validated by the config schema, so every entry parses.
    this.trustedNetworks = deps.config.relay.networks.map(parseRange);
    this.routes = new RouteTable(deps.config.routes);
  }

  private get cfg() {
    return this.deps.config.smtp;
  }

  private state(session: SMTPServerSession | object): ConnState {
    const s = this.states.get(session);
    if (!s) throw new Error('no state for this session');
    return s;
  }

  // --- ConnectionController -------------------------------------------------------------------

  opened(conn: PosternConnection): void {
    const info: SessionInfo = {
      id: conn.id,
      listener: this.kind,
      remoteAddress: conn.remoteAddress,
      remotePort: conn.remotePort,
      localAddress: conn.localAddress,
      localPort: conn.localPort,
      secure: conn.secure,
      // SessionInfo: "trusted network or authenticated"; relay-acl may widen it.
      relaying: inRanges(conn.remoteAddress, this.trustedNetworks),
    };
    const log = this.deps.log.child({ cid: conn.id, proto: this.kind, remote: conn.remoteAddress });
    this.states.set(conn.session, { conn, info, log, connLog: log, notes: new Map(), abort: new AbortController(), counted: true, ehlo: false });
    this.counter.add(conn.remoteAddress);
  }

  closed(conn: PosternConnection): void {
    const st = this.states.get(conn.session);
    if (!st || !st.counted) return;
    st.counted = false;
    st.abort.abort();
    this.counter.remove(conn.remoteAddress);
    logEvent(st.log, 'debug', 'smtp.disconnect', {});
  }

  stashParams(conn: PosternConnection, kind: 'mail' | 'rcpt', params: unknown): void {
    const st = this.state(conn.session);
    if (kind === 'mail') st.pendingMail = params as MailParams;
    else st.pendingRcpt = params as RcptParams;
  }

  logReply(conn: PosternConnection, reply: SmtpReply, detail: Record<string, unknown> = {}): void {
    const st = this.states.get(conn.session);
    const log = st?.log ?? this.deps.log;
    const level = reply.opts.userError || reply.code < 400 ? 'info' : 'warn';
    logEvent(log, level, reply.opts.evt ?? 'smtp.error', { code: reply.code, enhanced: reply.enhanced, ...detail, ...(reply.opts.cause ? { reason: String(reply.opts.cause) } : {}) }, reply.text);
  }

  async helo(conn: PosternConnection, hostname: string, verb: string): Promise<SmtpReply | null> {
    const st = this.state(conn.session);
    st.info.helo = hostname.toLowerCase();
    st.ehlo = verb !== 'HELO';
    st.tx = undefined; // RFC 5321 §4.1.4: EHLO resets the transaction
    const r = await this.run(st, 'helo', {});
    return this.refusal(r.verdict);
  }

  // --- pipeline helpers -----------------------------------------------------------------------

  private async run(st: ConnState, stage: Stage, extra: { rcpt?: EnvelopeRecipient; auth?: SessionInfoAuth; message?: MessageAccess }, current?: Tx): Promise<StageResult> {
    // At DATA the transaction is already detached from the connection (st.tx), so it is passed in.
    const tx = current ?? st.tx;
    const txInfo: TransactionInfo | undefined = tx
      ? { id: tx.id, mailFrom: tx.envelope.mailFrom, recipients: [...tx.rcpts.values()], envelope: tx.envelope }
      : undefined;
    let result: StageResult;
    try {
      result = await this.deps.pipeline.run(stage, { session: st.info, tx: txInfo, notes: tx?.notes ?? st.notes, signal: st.abort.signal, ...extra });
    } catch (e) {
      // The runner maps plugin errors itself; a throw here is the runner's own fault.
      st.log.error({ evt: 'plugin.error', stage, err: e }, 'pipeline failed');
      result = { verdict: { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable, try again later' }, trace: [] };
    }
    if (tx) tx.trace.push(...result.trace);
    return result;
  }

  /** The reply for a refusing verdict, or null when the verdict lets the command through. */
  private refusal(v: Verdict): SmtpReply | null {
    return v.kind === 'reject' || v.kind === 'tempfail' ? replyFromVerdict(v) : null;
  }

  // --- smtp-server handlers -------------------------------------------------------------------

  onConnect = (session: SMTPServerSession, cb: (err?: Error | null) => void): void => {
    void this.connect(session).then(
      (r) => cb(r),
      (e: unknown) => cb(Replies.internalError(e)),
    );
  };

  private async connect(session: SMTPServerSession): Promise<SmtpReply | null> {
    const st = this.state(session);
    st.info.secure = !!session.secure;
    if (session.clientHostname && !session.clientHostname.startsWith('[')) st.info.clientHostname = session.clientHostname;
    logEvent(st.log, 'info', 'smtp.connect', { listener: this.kind, secure: st.info.secure });
    const ip = st.conn.remoteAddress;
    let refuse: SmtpReply | null = null;
    if (this.counter.total > this.cfg.max_connections) refuse = Replies.tooManyConnections();
    else if (this.counter.of(ip) > this.cfg.max_connections_per_ip) refuse = Replies.tooManyConnectionsFromIp();
    if (!refuse) {
      const r = await this.run(st, 'connect', {});
      const v = r.verdict;
      // RFC 5321 §3.1: a server refusing at connect answers 554 (or 421 when temporary).
      if (v.kind === 'reject') refuse = new SmtpReply(554, classMatches(554, v.enhanced) ? (v.enhanced as EnhancedCode) : '5.7.1', replyFromVerdict(v).text, { userError: true, evt: 'smtp.connect.rejected' });
      else if (v.kind === 'tempfail') refuse = new SmtpReply(421, classMatches(421, v.enhanced) ? (v.enhanced as EnhancedCode) : '4.3.0', replyFromVerdict(v).text, { evt: 'smtp.connect.rejected' });
    }
    if (refuse) {
      this.logReply(st.conn, refuse);
      return refuse;
    }
    if (this.cfg.greeting_delay > 0) {
      // Early talkers are caught by the connection while we wait (connection.ts).
      await sleep(this.cfg.greeting_delay, undefined, { signal: st.abort.signal }).catch(() => undefined);
    }
    return null;
  }

  onAuth = (auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void): void => {
    void this.auth(auth, session).then(
      (r) => (r instanceof SmtpReply ? cb(r) : cb(null, { user: r })),
      (e: unknown) => cb(Replies.authTempfail(e)),
    );
  };

  private async auth(auth: SMTPServerAuthentication, session: SMTPServerSession): Promise<SmtpReply | string> {
    const st = this.state(session);
    const username = auth.username ?? '';
    const attempt = { method: auth.method, username, password: auth.password ?? '' };
    const before = st.info.authUser;
    const r = await this.run(st, 'auth', { auth: attempt });
    if (r.verdict.kind === 'accept') {
      let canonical = st.info.authUser && st.info.authUser !== before ? st.info.authUser : username;
      try {
        canonical = parseAddress(canonical).address;
      } catch {
        /* a plain user name stays as it is */
      }
      st.info.authUser = canonical;
      st.info.relaying = true;
      logEvent(st.log, 'info', 'smtp.auth.ok', { method: auth.method, user: canonical });
      return canonical;
    }
    // Default deny: only an explicit accept authenticates (RFC 4954 §6: 535 5.7.8, 454 4.7.0).
    st.info.authUser = before;
    const reply = r.verdict.kind === 'tempfail' ? Replies.authTempfail() : Replies.authFailed();
    this.logReply(st.conn, reply, { method: auth.method, user: username, verdict: r.verdict.kind });
    return reply;
  }

  onMailFrom = (address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void => {
    void this.mail(address, session).then(
      (r) => cb(r),
      (e: unknown) => cb(Replies.internalError(e)),
    );
  };

  private async mail(address: SMTPServerAddress, session: SMTPServerSession): Promise<SmtpReply | null> {
    const st = this.state(session);
    const params = st.pendingMail ?? {};
    st.pendingMail = undefined;
    st.tx = undefined;
    if (this.policy.requireAuth && !st.info.authUser) return Replies.authRequired();
    let mailFrom = '';
    if (address.address) {
      try {
        mailFrom = parseAddress(address.address).address;
      } catch (e) {
        return this.logged(st, Replies.senderSyntax(), { from: address.address, reason: (e as Error).message });
      }
      // RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter.
      if (!isAscii(mailFrom) && !params.smtputf8) return this.logged(st, Replies.needsSmtputf8(), { from: mailFrom });
    }
    const conn = st.conn;
    const cipher = conn.secure && session.tlsOptions ? session.tlsOptions : undefined;
    const envelope: Envelope = {
      mailFrom,
      recipients: [],
      ...(params.ret ? { ret: params.ret } : {}),
      ...(params.envid !== undefined ? { envid: params.envid } : {}),
      ...(params.body ? { body: params.body } : {}),
      ...(params.smtputf8 ? { smtputf8: true } : {}),
      source: {
        listener: this.kind,
        remoteAddress: st.info.remoteAddress,
        remotePort: st.info.remotePort,
        ...(st.info.clientHostname ? { clientHostname: st.info.clientHostname } : {}),
        ...(st.info.helo ? { helo: st.info.helo } : {}),
        ...(st.info.authUser ? { authUser: st.info.authUser } : {}),
        protocol: withKeyword({ lmtp: this.policy.lmtp, ehlo: st.ehlo, secure: conn.secure, auth: !!st.info.authUser, smtputf8: !!params.smtputf8 }),
        ...(cipher ? { tls: { cipher: cipher.name, version: cipher.version } } : {}),
      },
      receivedAt: 0,
    };
    st.tx = { id: this.deps.queue.newId(), started: Date.now(), envelope, notes: copyNotes(st.notes), trace: [], rcpts: new Map() };
    // From the connection's logger, not the last transaction's: bindings must not pile up over
    // a long connection.
    st.log = st.connLog.child({ qid: st.tx.id });
    const r = await this.run(st, 'mail', {});
    const refused = this.refusal(r.verdict);
    if (refused) {
      st.tx = undefined;
      return this.logged(st, new SmtpReply(refused.code, refused.enhanced, refused.text, { ...refused.opts, evt: 'smtp.mail.rejected' }), { from: mailFrom });
    }
    return null;
  }

  onRcptTo = (address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void => {
    void this.rcpt(address, session).then(
      (r) => cb(r),
      (e: unknown) => cb(Replies.internalError(e)),
    );
  };

  private async rcpt(address: SMTPServerAddress, session: SMTPServerSession): Promise<SmtpReply | null> {
    const st = this.state(session);
    const params = st.pendingRcpt ?? {};
    st.pendingRcpt = undefined;
    const tx = st.tx;
    if (!tx) return Replies.badSequence('Need MAIL command');
    let given = address.address;
    // RFC 5321 §4.1.1.3: <Postmaster> without a domain must be accepted.
    if (given.toLowerCase() === 'postmaster') given = `postmaster@${this.deps.config.domains.local[0] ?? this.deps.config.hostname}`;
    let parsed;
    try {
      parsed = parseAddress(given);
    } catch (e) {
      return this.logged(st, Replies.recipientSyntax(), { rcpt: given, reason: e instanceof AddressError ? e.reason : String(e) });
    }
    if (!isAscii(parsed.address) && !tx.envelope.smtputf8) return this.logged(st, Replies.needsSmtputf8(), { rcpt: parsed.address });
    const rcpt: EnvelopeRecipient = { address: parsed.address, ...(params.notify ? { notify: params.notify } : {}), ...(params.orcpt ? { orcpt: params.orcpt } : {}) };
    const r = await this.run(st, 'rcpt', { rcpt });
    const refused = this.refusal(r.verdict);
    if (refused) return this.logged(st, new SmtpReply(refused.code, refused.enhanced, refused.text, { ...refused.opts, evt: 'smtp.rcpt.rejected' }), { rcpt: rcpt.address });
    const pluginAccepted = r.verdict.kind === 'accept';
    const tricky = parsed.tricks.length > 0;
    if (!tricky && this.deps.directory.isLocalDomain(parsed.domain)) {
      const res = await this.deps.directory.resolve(parsed.address);
      if (res.kind === 'unknown') return this.logged(st, Replies.userUnknown(), { rcpt: rcpt.address });
    } else if (!(st.info.relaying || pluginAccepted || (!tricky && this.routes.has(parsed.domain)))) {
      return this.logged(st, Replies.relayDenied(), { rcpt: rcpt.address, tricks: parsed.tricks });
    }
    tx.rcpts.set(address.address.toLowerCase(), rcpt);
    return null;
  }

  private logged(st: ConnState, reply: SmtpReply, detail: Record<string, unknown>): SmtpReply {
    this.logReply(st.conn, reply, detail);
    return reply;
  }

  onData = (stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string | (string | Error)[]) => void): void => {
    void this.data(stream, session).then(
      (r) => (r instanceof Error ? cb(r) : cb(null, r)),
      (e: unknown) => cb(Replies.internalError(e)),
    );
  };

  private async data(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<SmtpReply | string | (string | Error)[]> {
    const st = this.state(session);
    const tx = st.tx;
    const guard = new DataGuard({ bareNewline: this.cfg.bare_newline, maxLineLength: this.cfg.max_line_length, maxBytes: this.cfg.max_message_size });
    const chunks: Buffer[] = [];
    guard.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<boolean>((resolve) => {
      guard.once('end', () => resolve(true));
      stream.once('error', () => resolve(false));
    });
    stream.pipe(guard);
    const complete = await ended;
    st.tx = undefined;
    if (!complete || !tx) return Replies.internalError('DATA stream ended early');
    const finish = <R extends SmtpReply | string | (string | Error)[]>(outcome: string, reply: R, extra: Record<string, unknown> = {}): R => {
      this.logTransaction(st, tx, guard.bytes, outcome, reply, extra);
      return reply;
    };
    if (guard.violation) return finish('rejected', violationReply(guard.violation), { violation: guard.violation });

    // Keyed as smtp-server keys rcptTo (lower-cased, a repeat replaces in place), so this order is
    // the order of its per-recipient LMTP replies.
    const recipients = [...tx.rcpts.values()];
    tx.envelope.recipients = recipients;
    tx.envelope.receivedAt = Date.now();
    const received = receivedHeader({
      helo: st.info.helo,
      clientHostname: st.info.clientHostname,
      remoteAddress: st.info.remoteAddress,
      hostname: this.deps.config.hostname,
      protocol: tx.envelope.source.protocol,
      id: tx.id,
      recipients: recipients.map((r) => r.address),
      tls: tx.envelope.source.tls,
      date: new Date(tx.envelope.receivedAt),
    });
    const raw = Buffer.concat([Buffer.from(received, 'latin1'), ...chunks]);
    const message = this.deps.createMessage(raw);

    let folder: string | undefined;
    let reroute: Extract<Verdict, { kind: 'reroute' }> | undefined;
    for (const stage of ['data', 'queue'] as const) {
      const r = await this.run(st, stage, { message }, tx);
      const v = r.verdict;
      if (v.kind === 'reject' || v.kind === 'tempfail') {
        const base = replyFromVerdict(v);
        return finish(v.kind, new SmtpReply(base.code, base.enhanced, base.text, { ...base.opts, evt: 'smtp.data.rejected' }));
      }
      if (v.kind === 'discard') {
        // Answer as if queued (the sender must not learn of the discard), keep nothing.
        const ok = Replies.queued(tx.id).message;
        return finish('discarded', this.policy.lmtp ? recipients.map(() => ok) : ok, { reason: v.reason });
      }
      if (v.kind === 'quarantine') folder = v.folder;
      if (v.kind === 'reroute') reroute = v;
    }
    if (folder) for (const r of recipients) r.folder = folder;
    // A new delivery plan (Sieve fileinto/redirect at the gateway): folders per recipient,
    // dropped recipients, redirect targets added as recipients (the sender stays the same).
    let rerouted = false;
    if (reroute) {
      const planned = applyReroute(recipients, reroute);
      rerouted = planned.changedList;
      tx.envelope.recipients = planned.recipients;
      if (planned.recipients.length === 0) {
        const ok = Replies.queued(tx.id).message;
        return finish('discarded', this.policy.lmtp ? recipients.map(() => ok) : ok, { reason: reroute.reason });
      }
    }

    let bytes: Buffer;
    try {
      bytes = message.render();
    } catch (e) {
      return finish('error', Replies.internalError(e));
    }
    if (this.policy.lmtp && !rerouted) {
      let outcomes: RecipientOutcome[];
      try {
        outcomes = await this.deps.queue.deliverNow(tx.id, tx.envelope, bytes);
      } catch (e) {
        return finish('error', Replies.queueFailed(e));
      }
      if (outcomes.length !== recipients.length) return finish('error', Replies.queueFailed(`deliverNow gave ${outcomes.length} outcomes for ${recipients.length} recipients`));
      // RFC 2033 §4.2: one reply per successful RCPT, in order.
      const replies = outcomes.map((o) => lmtpReply(o, tx.id));
      return finish(folder ? 'quarantined' : 'delivered', replies.map((r) => (r.code < 300 ? r.message : r)), { outcomes: outcomes.map((o) => ({ rcpt: o.recipient.address, status: o.status, code: o.code })) });
    }
    try {
      await this.deps.queue.accept(tx.id, tx.envelope, bytes);
    } catch (e) {
      return finish('error', Replies.queueFailed(e));
    }
    const outcome = rerouted ? 'rerouted' : folder ? 'quarantined' : 'queued';
    const extra = rerouted ? { rcptsAfter: tx.envelope.recipients.map((r) => r.address) } : folder ? { folder } : {};
    // LMTP after a reroute that changed the recipient list: the message is spooled (the plan no
    // longer matches the RCPTs one to one), and every RCPT hears 250 (RFC 2033 §4.2).
    if (this.policy.lmtp) return finish(outcome, recipients.map(() => Replies.queued(tx.id).message), extra);
    return finish(outcome, Replies.queued(tx.id).message, extra);
  }

  private logTransaction(st: ConnState, tx: Tx, size: number, outcome: string, reply: SmtpReply | string | (string | Error)[], extra: Record<string, unknown>): void {
    // Built only when it will be written: this runs once per message on the hot path.
    if (!st.log.isLevelEnabled('info')) return;
    const replyText = Array.isArray(reply) ? reply.map((r) => (r instanceof SmtpReply ? r.toString() : `250 ${String(r)}`)) : reply instanceof SmtpReply ? reply.toString() : `250 ${reply}`;
    logEvent(st.log, 'info', 'smtp.transaction', {
      qid: tx.id,
      client: { ip: st.info.remoteAddress, helo: st.info.helo, hostname: st.info.clientHostname },
      authUser: st.info.authUser,
      from: tx.envelope.mailFrom,
      rcpts: [...tx.rcpts.values()].map((r) => r.address),
      size,
      outcome,
      reply: replyText,
      trace: tx.trace.map((t) => ({ plugin: t.plugin, stage: t.stage, verdict: t.verdict, ms: t.ms, ...(t.rcpt ? { rcpt: t.rcpt } : {}), ...(t.rule ? { rule: t.rule, line: t.line } : {}) })),
      ms: Date.now() - tx.started,
      ...extra,
    });
  }

  onClose = (): void => {
    /* accounting runs on the socket's close (connection.ts) */
  };
}

type SessionInfoAuth = { method: string; username: string; password: string };

/**
 * Applies a `reroute` verdict to the recipients: each planned recipient gets its folders (one:
 * `folder`; several: `folders`; "INBOX" alone: none; []: dropped), then redirect addresses are
 * appended once each. `changedList` tells whether the list itself changed (LMTP needs it).
 */
export function applyReroute(recipients: EnvelopeRecipient[], v: Extract<Verdict, { kind: 'reroute' }>): { recipients: EnvelopeRecipient[]; changedList: boolean } {
  const out: EnvelopeRecipient[] = [];
  let changedList = false;
  for (const r of recipients) {
    const folders = v.plan?.[r.address.toLowerCase()];
    if (!folders) {
      out.push(r);
      continue;
    }
    if (folders.length === 0) {
      changedList = true;
      continue;
    }
    const uniq = [...new Map(folders.map((f) => [/^inbox$/i.test(f) ? 'INBOX' : f, f])).keys()];
    delete r.folder;
    delete r.folders;
    if (uniq.length === 1) {
      if (uniq[0] !== 'INBOX') r.folder = uniq[0];
    } else r.folders = uniq;
    out.push(r);
  }
  const have = new Set(out.filter((r) => !r.folder && !r.folders).map((r) => r.address.toLowerCase()));
  for (const a of v.redirect ?? []) {
    if (have.has(a.toLowerCase())) continue;
    have.add(a.toLowerCase());
    out.push({ address: a });
    changedList = true;
  }
  return { recipients: out, changedList };
}

/** Turns a RecipientOutcome into a reply with a class-consistent enhanced code. */
export function lmtpReply(o: RecipientOutcome, id: string): SmtpReply {
  const ok = o.status === 'delivered' || o.status === 'queued';
  if (ok) {
    const code = o.code >= 200 && o.code < 300 ? o.code : 250;
    const enh = classMatches(code, o.enhanced) ? (o.enhanced as EnhancedCode) : '2.0.0';
    return new SmtpReply(code, enh, o.text && !/[\r\n]/.test(o.text) ? o.text : `Ok: ${o.status} ${id}`);
  }
  const want = o.status === 'failed' ? 5 : 4;
  const code = Math.floor(o.code / 100) === want ? o.code : want === 5 ? 550 : 451;
  const enh = classMatches(code, o.enhanced) ? (o.enhanced as EnhancedCode) : want === 5 ? '5.0.0' : '4.0.0';
  return new SmtpReply(code, enh, o.text && !/[\r\n]/.test(o.text) ? o.text : want === 5 ? 'Delivery failed' : 'Try again later');
}
