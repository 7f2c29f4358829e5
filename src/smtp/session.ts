// Turns smtp-server's protocol events into pipeline stages and queue calls, per listener:
//
//   connect (limits, `connect` stage, greeting delay) → HELO/EHLO/LHLO (`helo`) → [STARTTLS] →
//   [AUTH (`auth`; accept = success, anything else 535 5.7.8)] → MAIL (queue id, `mail`) →
//   RCPT* (address syntax, `rcpt`, then the core relay policy) → DATA (DataGuard, Received,
//   `data` then `queue`, queue.accept / LMTP deliverNow) → one `smtp.transaction` log line.
//
// Session state follows smtp-server's (connection.ts): a greeting counts once the `helo` stage
// and the library both accepted it (a refused one changes nothing, RFC 5321 §4.1.4); the
// transaction ends whenever the library's envelope does (RSET, HELO/EHLO, XCLIENT, XFORWARD,
// STARTTLS, end of DATA); the login goes wherever the library drops it (XCLIENT, STARTTLS). After
// STARTTLS (RFC 3207 §4.2) the greeting, the login and the transaction are forgotten; the client
// address and name a trusted peer gave with XCLIENT stay (see startedTls). XFORWARD names the
// original client of one transaction (`info.forwarded`, src/pipeline/origin.ts): Received, the
// log lines and what plugins tell of the message's origin name it, while the session's own client
// fields stay the peer's, and with them relaying and every plugin's policy (connection.ts).
//
// Core relay policy (never an open relay, whatever the chain holds; ARCHITECTURE.md): a recipient
// in a local domain without address tricks is checked against the directory (unknown → 550 5.1.1);
// any other recipient (foreign domain, or any trick from address.ts) is accepted only when the
// session may relay (trusted network from relay.networks, or authenticated), a plugin returned
// `accept` for it, or — for a trick-free address — its domain has a route (`routes`, exact or a
// `.sub.example` key); else 554 5.7.1.
//
// Repeated RCPTs: a recipient whose address (case aside) an accepted RCPT already gave stays one
// recipient, as in the library's envelope, so the message is delivered to it once. Over SMTP that
// is all; LMTP owes a reply to every accepted RCPT (RFC 2033 §4.2), so each repeat is answered
// with its recipient's reply after DATA (answerEachRcpt) and counts toward smtp.max_recipients.
//
// Standards: RFC 5321 (§3.1 greeting, §4.1.1 commands, §4.4 trace, §4.5.3 limits), RFC 2033
// (LMTP: one reply per accepted RCPT after DATA, §4.2), RFC 4954 (AUTH), RFC 3461 (DSN
// parameters kept in the envelope), RFC 6531 (SMTPUTF8), RFC 1870 (SIZE).
// Config keys: hostname, smtp.* (max_message_size, max_line_length, bare_newline, greeting_delay,
// max_connections, max_connections_per_ip, max_recipients), relay.networks, routes.
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { MessageAccess, SessionInfo, Stage, TransactionInfo } from '../pipeline/plugin.js';
import type { Pipeline, StageResult, TraceEntry } from '../pipeline/types.js';
import type { HeaderEdit, Verdict } from '../pipeline/verdict.js';
import type { Envelope, EnvelopeRecipient, ListenerKind } from '../queue/envelope.js';
import type { MessageQueue, RecipientOutcome } from '../queue/queue.js';
import { AddressError, needsSmtputf8, parseAddress } from '../address/address.js';
import { inRanges, parseRange, type Range } from '../address/cidr.js';
import type { RouteTable } from '../delivery/routes.js';
import { staticRoutes, withoutCredentials, type RouteSource } from '../policy/routes.js';
import { logEvent } from '../log/logger.js';
import { countTransaction } from '../api/metrics.js';
import type { RecipientVerifier } from '../proxy/verify.js';
import type { BackendPool } from '../proxy/backend-pool.js';
import { InlineTransaction, ProxyReplies } from '../proxy/inline.js';
import { DataGuard, type DataViolation } from './data-guard.js';
import type { MailParams, RcptParams } from './params.js';
import { applyEdits, splitCopies, type MessageCopy } from './copies.js';
import { receivedHeader, withKeyword } from './received.js';
import { forwardedFromAttributes, namesClient, originClient, type OriginFacts } from '../pipeline/origin.js';
import { classMatches, Replies, replyFromVerdict, SmtpReply, StacklessError, type EnhancedCode } from './replies.js';
import type { ConnectionController, ConnectionPolicy, PosternConnection } from './connection.js';

/**
 * The abort reason of a session whose client went away. Stackless: abort() without a reason
 * would build a DOMException and its stack for every connection.
 */
class ConnectionClosed extends StacklessError {
  constructor() {
    super('client connection closed');
    this.name = 'ConnectionClosed';
  }
}

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
  /** Recipient verification for routes with `verify: callout | list` (src/proxy/verify.ts). */
  verifier?: RecipientVerifier;
  /** Backend connections kept between in-line proxy transactions (src/proxy/backend-pool.ts). */
  backends?: BackendPool;
  /** Next hops: the config's `routes`, plus the store's in the daemon (src/policy/routes.ts). */
  routes?: RouteSource;
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
  /**
   * LMTP only: the `rcpts` key of every accepted RCPT, in order, repeats included; each one is
   * owed a reply after DATA (RFC 2033 §4.2).
   */
  answers: string[];
  /** Where the accepted recipients go: 'queue', or 'proxy:<nexthop>' (a `mode: proxy` route). */
  dest?: string;
  /** The backend side of a proxied transaction (src/proxy/inline.ts). */
  inline?: InlineTransaction;
}

/**
 * Ends a transaction that will not reach DATA (RSET, new MAIL, EHLO, disconnect), or that DATA
 * has finished with. Log lines from now on belong to the connection, not to that queue id.
 */
function dropTx(st: ConnState): void {
  st.tx?.inline?.abort();
  st.tx = undefined;
  st.log = st.forwardLog ?? st.connLog;
}

interface ConnState {
  conn: PosternConnection;
  info: SessionInfo;
  /** The connection's logger: the transaction's (with its qid) while one is open. */
  log: Logger;
  /** The connection's own logger, parent of each transaction's. */
  connLog: Logger;
  /** The connection's logger naming the client XFORWARD gave, while its transaction lasts. */
  forwardLog?: Logger;
  notes: Map<string, Record<string, unknown>>;
  /**
   * The notes as the `connect` stage left them: what was known of the client before it said
   * anything. STARTTLS goes back to them (RFC 3207 §4.2). Unset until the client is admitted.
   */
  connectNotes?: Map<string, Record<string, unknown>>;
  abort: AbortController;
  counted: boolean;
  /** The address this connection is counted under (per-IP limits): the peer's, or XCLIENT's. */
  countedAs: string;
  /** The greeting in effect was EHLO/LHLO (not HELO); false before any greeting. */
  ehlo: boolean;
  /**
   * Whether the client's network lets it relay (relay.networks, or a `connect`-stage plugin),
   * without any login: what `info.relaying` falls back to when a login is dropped.
   */
  networkRelaying: boolean;
  tx?: Tx;
  pendingMail?: MailParams;
  pendingRcpt?: RcptParams;
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
  private readonly routes: RouteSource;

  constructor(
    private readonly deps: SmtpDeps,
    readonly kind: ListenerKind,
    readonly policy: ConnectionPolicy,
    private readonly counter: ConnectionCounter,
  ) {
    // relay.networks is validated by the config schema, so every entry parses.
    this.trustedNetworks = deps.config.relay.networks.map(parseRange);
    this.routes = deps.routes ?? staticRoutes(deps.config.routes);
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
    this.states.set(conn.session, { conn, info, log, connLog: log, notes: new Map(), abort: new AbortController(), counted: true, countedAs: conn.remoteAddress, ehlo: false, networkRelaying: info.relaying });
    this.counter.add(conn.remoteAddress);
  }

  closed(conn: PosternConnection): void {
    const st = this.states.get(conn.session);
    if (!st || !st.counted) return;
    st.counted = false;
    st.abort.abort(new ConnectionClosed());
    dropTx(st);
    this.counter.remove(st.countedAs);
    logEvent(st.log, 'debug', 'smtp.disconnect', {});
  }

  /**
   * XCLIENT / XFORWARD from a trusted peer (connection.ts checks listen.<name>.xclient).
   *
   * XCLIENT hands the session to the client it names: its address, name and HELO replace the
   * peer's for relaying, plugins, limits and Received. XCLIENT LOGIN arrives through onAuth
   * (method XCLIENT) before this runs; the login is then whatever the library kept (XCLIENT ADDR
   * or an empty LOGIN drops it).
   *
   * XFORWARD only names the original client of the next transaction (`info.forwarded`); the
   * session's own fields stay the peer's (see forwarded()).
   *
   * The library has already started its session over, which ended any transaction (sessionReset).
   */
  clientChanged(conn: PosternConnection, via: 'XCLIENT' | 'XFORWARD'): void {
    const st = this.states.get(conn.session);
    if (!st) return;
    if (via === 'XFORWARD') return this.forwarded(st, conn);
    const attrs = conn._xClient;
    // XCLIENT ADDR (the peer's own login is not the client's) and XCLIENT LOGIN= (an explicit
    // logout) end the library's login; ours goes with it.
    this.followLibraryLogin(st);
    // Its own network (or the LOGIN given with it) decides relaying, never the peer's, and the
    // limits count it. It also ends what an XFORWARD before it named (connection.ts).
    this.dropForwarded(st);
    if (conn.remoteAddress !== st.countedAs) {
      if (st.counted) {
        this.counter.remove(st.countedAs);
        this.counter.add(conn.remoteAddress);
      }
      st.countedAs = conn.remoteAddress;
      st.networkRelaying = inRanges(conn.remoteAddress, this.trustedNetworks);
      st.info.relaying = st.networkRelaying || !!st.info.authUser;
      st.connLog = st.connLog.child({ remote: conn.remoteAddress });
    }
    st.log = st.connLog;
    if (conn.remoteAddress !== st.info.remoteAddress) {
      st.info.remoteAddress = conn.remoteAddress;
      if (typeof conn.remotePort === 'number') st.info.remotePort = conn.remotePort;
    }
    const name = attrs.get('NAME');
    if (typeof name === 'string' && name && !name.startsWith('[')) st.info.clientHostname = name.toLowerCase();
    else if (attrs.has('NAME')) delete st.info.clientHostname;
    const helo = attrs.get('HELO');
    if (typeof helo === 'string' && helo) st.info.helo = helo.toLowerCase();
    logEvent(st.log, 'info', 'smtp.xclient', { via, peer: conn._originalRemoteAddress, client: conn.remoteAddress, name: st.info.clientHostname ?? null, helo: st.info.helo ?? null, login: st.info.authUser ?? null });
  }

  /**
   * An accepted XFORWARD (one or several, their attributes add up): the client of the coming
   * transaction as the peer, a content filter handing mail back, describes it. As in Postfix it
   * is for logs, Received and describing the message only: the session's address, name and HELO
   * stay the peer's, so relaying, the connection limits and every plugin's policy (relay-acl's
   * access lists, DNSBL, greylisting, rate limits, the AUTH throttle) stay with the peer. The
   * library has put the named values in its own client fields meanwhile; connection.ts puts
   * them back when the transaction ends.
   */
  private forwarded(st: ConnState, conn: PosternConnection): void {
    const f = forwardedFromAttributes(conn._xForward);
    st.info.forwarded = f;
    const o = originClient(st.info);
    // Every line of the transaction names the client it is about (smtp.transaction the peer too).
    st.log = st.forwardLog = namesClient(f) ? st.connLog.child({ remote: o.address ?? null }) : st.connLog;
    logEvent(st.log, 'info', 'smtp.xclient', {
      via: 'XFORWARD',
      peer: st.info.remoteAddress,
      client: o.address ?? null,
      name: o.hostname ?? null,
      helo: o.helo ?? null,
      login: st.info.authUser ?? null,
      ...(f.protocol ? { proto: f.protocol } : {}),
      ...(f.source ? { source: f.source } : {}),
      ...(f.ident ? { ident: f.ident } : {}),
    });
  }

  /** XFORWARD's transaction is over (connection.ts): nothing names its client any more. */
  clientRestored(conn: PosternConnection): void {
    const st = this.states.get(conn.session);
    if (st) this.dropForwarded(st);
  }

  /** Ends what XFORWARD named; the transaction it was for has ended, or is ending, too. */
  private dropForwarded(st: ConnState): void {
    delete st.info.forwarded;
    delete st.forwardLog;
    st.log = st.connLog;
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

  async helo(conn: PosternConnection, hostname: string): Promise<SmtpReply | null> {
    const st = this.state(conn.session);
    // The plugins judge the name this greeting would give the session, outside any transaction.
    // Nothing changes until the library accepts it too (greeted): RFC 5321 §4.1.4, a server
    // that refuses EHLO stays in the state it was in, so the earlier greeting, its mode and an
    // open transaction all survive a refusal.
    const current = st.info.helo;
    st.info.helo = this.greetingName(conn, hostname.toLowerCase());
    try {
      const r = await this.run(st, 'helo', {}, null);
      return this.refusal(r.verdict);
    } finally {
      st.info.helo = current;
    }
  }

  greeted(conn: PosternConnection): void {
    const st = this.states.get(conn.session);
    if (!st || !conn.hostNameAppearsAs) return;
    st.info.helo = this.greetingName(conn, conn.hostNameAppearsAs);
    st.ehlo = conn.openingCommand !== 'HELO';
  }

  /** A HELO name given by XCLIENT is the original client's; the peer's own EHLO does not replace it. */
  private greetingName(conn: PosternConnection, given: string): string {
    const xHelo = conn._xClient.get('HELO');
    return typeof xHelo === 'string' && xHelo ? xHelo.toLowerCase() : given;
  }

  sessionReset(conn: PosternConnection): void {
    const st = this.states.get(conn.session);
    if (st) dropTx(st);
  }

  /**
   * Where the library has no login (session.user) neither have we, and a dropped login takes its
   * relaying with it: what is left is the network's.
   */
  private followLibraryLogin(st: ConnState): void {
    if (st.conn.session.user || st.info.authUser === undefined) return;
    delete st.info.authUser;
    st.info.relaying = st.networkRelaying;
  }

  // --- pipeline helpers -----------------------------------------------------------------------

  /**
   * Runs one stage. `tx` defaults to the open transaction; at DATA it is already detached from
   * the connection (st.tx), so it is passed in, and `helo` passes null (a greeting is never part
   * of a transaction, even one sent in the middle of it).
   */
  private async run(st: ConnState, stage: Stage, extra: { rcpt?: EnvelopeRecipient; auth?: SessionInfoAuth; message?: MessageAccess }, tx: Tx | null | undefined = st.tx): Promise<StageResult> {
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
      (e: unknown) => cb(Replies.greetingUnavailable(e)),
    );
  };

  private async connect(session: SMTPServerSession): Promise<SmtpReply | null> {
    const st = this.state(session);
    st.info.secure = !!session.secure;
    if (session.clientHostname && !session.clientHostname.startsWith('[')) st.info.clientHostname = session.clientHostname;
    logEvent(st.log, 'info', 'smtp.connect', { listener: this.kind, secure: st.info.secure });
    const refuse = await this.admit(st);
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

  /**
   * What a client meets before its greeting, at connect and again when XCLIENT hands the session
   * to another client: the connection limits, then the `connect` stage. Its connection-level
   * notes start empty; what the stage leaves in them is kept (`connectNotes`) as the state
   * STARTTLS goes back to. A reply refuses the client. A handover adds no connection, so only
   * the per-address limit applies then (the total may be over while refused newcomers close).
   */
  private async admit(st: ConnState, handover = false): Promise<SmtpReply | null> {
    st.notes = new Map();
    st.connectNotes = undefined;
    if (!handover && this.counter.total > this.cfg.max_connections) return Replies.tooManyConnections();
    if (this.counter.of(st.countedAs) > this.cfg.max_connections_per_ip) return Replies.tooManyConnectionsFromIp();
    // The stage sees the network's standing only (a connect-stage plugin such as relay-acl may
    // widen it for a network of its own); an XCLIENT LOGIN is in authUser, and adds its own after.
    st.info.relaying = st.networkRelaying;
    const v = (await this.run(st, 'connect', {})).verdict;
    st.networkRelaying = st.info.relaying;
    st.info.relaying = st.networkRelaying || st.info.authUser !== undefined;
    // RFC 5321 §3.1: a server refusing at connect answers 554 (or 421 when temporary).
    if (v.kind === 'reject') return new SmtpReply(554, classMatches(554, v.enhanced) ? (v.enhanced as EnhancedCode) : '5.7.1', replyFromVerdict(v).text, { userError: true, evt: 'smtp.connect.rejected' });
    if (v.kind === 'tempfail') return new SmtpReply(421, classMatches(421, v.enhanced) ? (v.enhanced as EnhancedCode) : '4.3.0', replyFromVerdict(v).text, { evt: 'smtp.connect.rejected' });
    st.connectNotes = copyNotes(st.notes);
    return null;
  }

  /**
   * XCLIENT handed the session to another client (clientChanged has made it the session's):
   * admitted as a new connection would be, as Postfix and Haraka treat it, so a `connect`-stage
   * DNSBL or relay-acl's networks judge that client, not the proxy in front of it.
   */
  async handedOver(conn: PosternConnection): Promise<SmtpReply | null> {
    const st = this.states.get(conn.session);
    if (!st) return null;
    return this.admit(st, true);
  }

  onSecure = (_socket: Socket, session: SMTPServerSession, cb: (err?: Error | null) => void): void => {
    const st = this.states.get(session);
    // Implicit TLS (smtps) was known at connect and nothing has been said yet; STARTTLS has.
    if (st && !st.info.secure) this.startedTls(st);
    cb();
  };

  /**
   * STARTTLS succeeded. RFC 3207 §4.2: the server MUST discard any knowledge obtained from the
   * client which was not obtained from the TLS negotiation itself, such as the EHLO argument.
   * The library has already dropped its greeting, its login (session.user) and its envelope
   * (sessionReset ended our transaction); ours follows:
   *   - forgotten: the HELO/EHLO name and mode; any login, an XCLIENT LOGIN too (an authorization
   *     identity never carries across STARTTLS: the client authenticates again inside TLS); the
   *     XCLIENT HELO (the client's greeting, which a new EHLO replaces, as for any client).
   *   - kept: the client address, port and name a trusted peer gave with XCLIENT (XFORWARD's
   *     end with their transaction, which STARTTLS ends, as Postfix's mail_reset does).
   *     They describe the far end of the connection, like the peer address, which STARTTLS does
   *     not change either, and the peer was trusted for them by that address
   *     (listen.<name>.xclient.trusted), which still holds. Postfix draws the same line: its
   *     STARTTLS resets the HELO name, the transaction and the SASL login, and keeps the client
   *     name and address XCLIENT set.
   *   - relaying: what the client's network gives (relay.networks, a `connect`-stage plugin).
   *   - plugins' connection notes: back to what the `connect` stage left (`connectNotes`), which
   *     was learnt from the address before the client said anything. Notes a later hook added
   *     or replaced go; a value the `connect` stage stored is a shallow copy, so a hook that
   *     changes an object inside it in place changes the kept one too.
   */
  private startedTls(st: ConnState): void {
    const conn = st.conn;
    const login = st.info.authUser;
    st.info.secure = true;
    this.followLibraryLogin(st);
    conn.forgetClaimsBeforeTls();
    delete st.info.helo;
    st.ehlo = false;
    // Plugins' connection notes from HELO, AUTH and later were learnt from the client before TLS.
    st.notes = st.connectNotes ? copyNotes(st.connectNotes) : new Map();
    const cipher = conn.tlsOptions || undefined;
    const dropped = login !== undefined && st.info.authUser === undefined ? { droppedLogin: login } : {};
    logEvent(st.log, 'info', 'smtp.starttls', { tls: cipher?.version ?? null, cipher: cipher?.name ?? null, ...dropped });
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
    if (auth.method === 'XCLIENT') {
      // XCLIENT LOGIN (only reachable from listen.<name>.xclient.trusted peers): the peer has
      // authenticated the user; we take its word, as Postfix does.
      st.info.authUser = username;
      st.info.relaying = true;
      logEvent(st.log, 'info', 'smtp.auth.ok', { method: 'XCLIENT', user: username });
      return username;
    }
    const attempt = { method: auth.method, username, password: auth.password ?? '' };
    const before = st.info.authUser;
    const relayingBefore = st.info.relaying;
    const r = await this.run(st, 'auth', { auth: attempt });
    if (r.verdict.kind === 'accept') {
      let canonical = st.info.authUser && st.info.authUser !== before ? st.info.authUser : username;
      try {
        canonical = parseAddress(canonical).address;
      } catch {
        /* a plain user name stays as it is */
      }
      // RFC 4616 §2: an authorization identity other than the user's own is refused (no user
      // here may act as another); clients that put the user name there alone are the user.
      const authzid = auth.method === 'PLAIN' && auth.authcid ? (auth.authzid ?? '') : '';
      if (authzid !== '' && authzid.toLowerCase() !== canonical.toLowerCase() && authzid.toLowerCase() !== username.toLowerCase()) {
        // Undo what the plugin's accept set (the auth plugin grants relaying with the user).
        st.info.authUser = before;
        st.info.relaying = relayingBefore;
        return this.logged(st, Replies.authzidRefused(), { method: auth.method, user: username, authzid });
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
    dropTx(st);
    if (this.policy.requireAuth && !st.info.authUser) return Replies.authRequired();
    let mailFrom = '';
    if (address.address) {
      try {
        mailFrom = parseAddress(address.address).address;
      } catch (e) {
        return this.logged(st, Replies.senderSyntax(), { from: address.address, reason: (e as Error).message });
      }
      // RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter.
      if (needsSmtputf8(mailFrom) && !params.smtputf8) return this.logged(st, Replies.needsSmtputf8(), { from: mailFrom });
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
        // XFORWARD cannot change it during the transaction (the library answers 503).
        ...(st.info.forwarded ? { forwarded: { ...st.info.forwarded } } : {}),
      },
      receivedAt: 0,
    };
    st.tx = { id: this.deps.queue.newId(), started: Date.now(), envelope, notes: copyNotes(st.notes), trace: [], rcpts: new Map(), answers: [] };
    // From the connection's logger, not the last transaction's: bindings must not pile up over
    // a long connection.
    st.log = (st.forwardLog ?? st.connLog).child({ qid: st.tx.id });
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
    // The library counts distinct addresses only (a repeat replaces its entry); on LMTP a repeat
    // is one more reply after DATA, so it counts too.
    if (this.policy.lmtp && tx.answers.length >= this.cfg.max_recipients) return this.logged(st, Replies.tooManyRecipients(), { rcpt: address.address });
    let given = address.address;
    // RFC 5321 §4.1.1.3: <Postmaster> without a domain must be accepted.
    if (given.toLowerCase() === 'postmaster') given = `postmaster@${this.deps.config.domains.local[0] ?? this.deps.config.hostname}`;
    let parsed;
    try {
      parsed = parseAddress(given);
    } catch (e) {
      return this.logged(st, Replies.recipientSyntax(), { rcpt: given, reason: e instanceof AddressError ? e.reason : String(e) });
    }
    if (needsSmtputf8(parsed.address) && !tx.envelope.smtputf8) return this.logged(st, Replies.needsSmtputf8(), { rcpt: parsed.address });
    const rcpt: EnvelopeRecipient = { address: parsed.address, ...(params.notify ? { notify: params.notify } : {}), ...(params.orcpt ? { orcpt: params.orcpt } : {}) };
    const r = await this.run(st, 'rcpt', { rcpt });
    const refused = this.refusal(r.verdict);
    if (refused) return this.logged(st, new SmtpReply(refused.code, refused.enhanced, refused.text, { ...refused.opts, evt: 'smtp.rcpt.rejected' }), { rcpt: rcpt.address });
    const pluginAccepted = r.verdict.kind === 'accept';
    const tricky = parsed.tricks.length > 0;
    // Read at most once per RCPT, and only when needed: routes added over the API apply from
    // the next recipient on.
    let table: RouteTable | undefined;
    const routes = async () => (table ??= await this.routes.table(st.log));
    if (!tricky && this.deps.directory.isLocalDomain(parsed.domain)) {
      const res = await this.deps.directory.resolve(parsed.address);
      if (res.kind === 'unknown') return this.logged(st, Replies.userUnknown(), { rcpt: rcpt.address });
    } else if (!(st.info.relaying || pluginAccepted || (!tricky && (await routes()).has(parsed.domain)))) {
      // Routes the store has never answered may hold this domain: no refusal for good yet.
      if (!tricky && this.routes.unknown) return this.logged(st, Replies.lookupFailed('the routes in the store have never been read'), { rcpt: rcpt.address });
      return this.logged(st, Replies.relayDenied(), { rcpt: rcpt.address, tricks: parsed.tricks });
    } else if (!tricky && this.deps.verifier) {
      // A routed domain may ask its next hop (or a list) first: no accepting what it would refuse.
      const match = (await routes()).find(parsed.domain);
      const d = match ? await this.deps.verifier.verify(match.route, parsed.address, parsed.domain) : null;
      if (d) {
        tx.trace.push(d.trace);
        if (d.reply) return this.logged(st, d.reply, { rcpt: rcpt.address, verify: d.trace.detail });
      }
    }
    const key = address.address.toLowerCase();
    // A repeat goes to the destination its first RCPT chose, and a backend already has it: not
    // mirrored, since a backend that keeps one entry per address (smtp-server's LMTP) would give
    // fewer replies after DATA than RCPTs sent. Each repeat hears its recipient's reply then.
    const refusedByProxy = tx.rcpts.has(key) ? null : await this.proxyRcpt(st, tx, parsed.address, parsed.domain, !tricky && !this.deps.directory.isLocalDomain(parsed.domain), routes);
    if (refusedByProxy) return this.logged(st, refusedByProxy, { rcpt: rcpt.address, proxy: tx.dest && withoutCredentials(tx.dest.replace(/^proxy:/, '')) });
    tx.rcpts.set(key, rcpt);
    if (this.policy.lmtp) tx.answers.push(key);
    return null;
  }

  /**
   * `mode: proxy` routes (src/proxy/inline.ts): the RCPT is mirrored to the backend and its reply
   * is ours. One transaction goes to one destination: a recipient for another one (another
   * next hop, or the queue) hears 452 4.5.3 and comes back in the next transaction (RFC 5321
   * §3.3). Returns the refusal, or null when the recipient may be added.
   */
  private async proxyRcpt(st: ConnState, tx: Tx, address: string, domain: string, routable: boolean, routes: () => Promise<RouteTable>): Promise<SmtpReply | null> {
    const match = routable ? (await routes()).find(domain) : null;
    const proxied = match && match.route.mode === 'proxy' ? match.route : null;
    const dest = proxied ? `proxy:${proxied.nexthop}` : 'queue';
    if (tx.dest && tx.dest !== dest) return ProxyReplies.otherDestination();
    if (!proxied) {
      tx.dest = dest;
      return null;
    }
    const t0 = Date.now();
    let reply: SmtpReply;
    try {
      if (!tx.inline) {
        tx.inline = await InlineTransaction.open(proxied, this.deps.config.hostname, { remoteAddress: st.info.remoteAddress, remotePort: st.info.remotePort, clientHostname: st.info.clientHostname, helo: st.info.helo, authUser: st.info.authUser, ehlo: st.ehlo, forwarded: st.info.forwarded }, tx.envelope, {
          ...(this.deps.backends ? { pool: this.deps.backends } : {}),
          tls: this.deps.config.outbound.tls,
        });
        logEvent(st.log, 'info', 'proxy.session', { nexthop: withoutCredentials(proxied.nexthop), xclient: tx.inline.xclient, lmtp: tx.inline.lmtp, tls: tx.inline.secure, reused: tx.inline.reused });
      }
      reply = await tx.inline.rcpt(address);
    } catch (e) {
      reply = e instanceof SmtpReply ? e : ProxyReplies.backendFailed(e);
    }
    tx.trace.push({ stage: 'rcpt', plugin: 'proxy', verdict: reply.code < 300 ? 'next' : reply.code >= 500 ? 'reject' : 'tempfail', ms: Date.now() - t0, rcpt: address, code: reply.code, enhanced: reply.enhanced, detail: `${withoutCredentials(proxied.nexthop)}: ${reply.toString()}` });
    if (reply.code >= 300) return reply;
    tx.dest = dest;
    return null;
  }

  private logged(st: ConnState, reply: SmtpReply, detail: Record<string, unknown>): SmtpReply {
    this.logReply(st.conn, reply, detail);
    return reply;
  }

  onData = (stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string | (string | Error)[]) => void): void => {
    // data() detaches the transaction from the connection; its RCPTs are still to be answered.
    const tx = this.states.get(session)?.tx;
    // A proxied transaction's backend session ends with the DATA reply, whatever it was.
    const inline = tx?.inline;
    void this.data(stream, session)
      .catch((e: unknown) => Replies.internalError(e))
      .finally(() => inline?.finish())
      .then((r) => {
        // Never left to the library on LMTP: it would repeat a single reply once per distinct
        // address, not once per accepted RCPT.
        const out = this.policy.lmtp && tx ? answerEachRcpt(r, [...tx.rcpts.keys()], tx.answers) : r;
        return out instanceof Error ? cb(out) : cb(null, out);
      });
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
      countTransaction(outcome, reply instanceof SmtpReply ? reply.code : 250, tx.trace);
      return reply;
    };
    if (guard.violation) return finish('rejected', violationReply(guard.violation), { violation: guard.violation });

    // Keyed as smtp-server keys rcptTo (lower-cased, a repeat replaces in place): a repeated RCPT
    // is one recipient, delivered once. An LMTP reply list below has one entry per recipient, in
    // this order; onData answers each accepted RCPT from it.
    const recipients = [...tx.rcpts.values()];
    tx.envelope.recipients = recipients;
    tx.envelope.receivedAt = Date.now();
    const from = receivedFrom(tx.envelope.source);
    const received = receivedHeader({
      helo: from.helo,
      clientHostname: from.hostname,
      remoteAddress: from.address,
      hostname: this.deps.config.hostname,
      protocol: tx.envelope.source.protocol,
      id: tx.id,
      recipients: recipients.map((r) => r.address),
      tls: tx.envelope.source.tls,
      date: new Date(tx.envelope.receivedAt),
    });
    // UTF-8: with SMTPUTF8 the `for <…>` address may be non-ASCII (RFC 6532); the rest is ASCII.
    const raw = Buffer.concat([Buffer.from(received, 'utf8'), ...chunks]);
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
    // Recipients refused on their own (a rule's reject at the gateway): on LMTP each hears its
    // refusal and the others go on (RFC 2033 §4.2); SMTP has one reply for the message, so there
    // a refusal refuses it.
    const refused = refusedRecipients(recipients, reroute);
    if (refused.size > 0 && !this.policy.lmtp) {
      const first = [...refused.values()][0]!;
      return finish('reject', new SmtpReply(first.code, first.enhanced, first.text, { ...first.opts, evt: 'smtp.data.rejected' }));
    }
    const perRcpt = (ok: (r: EnvelopeRecipient) => string | Error) => recipients.map((r) => refused.get(r) ?? ok(r));
    // mode: proxy — the backend answers; nothing is spooled. Gateway reroute plans (Sieve
    // fileinto/redirect, quarantine folders) do not apply: the backend owns delivery.
    if (tx.inline) return this.proxyData(tx.inline, message, recipients, finish);
    // A new delivery plan (Sieve fileinto/redirect at the gateway): folders per recipient,
    // dropped recipients, redirect targets added as recipients (the sender stays the same).
    let rerouted = false;
    if (reroute) {
      const planned = applyReroute(refused.size ? recipients.filter((r) => !refused.has(r)) : recipients, reroute);
      rerouted = planned.changedList;
      tx.envelope.recipients = planned.recipients;
      if (planned.recipients.length === 0) {
        const ok = Replies.queued(tx.id).message;
        return finish(refused.size === recipients.length ? 'reject' : 'discarded', this.policy.lmtp ? perRcpt(() => ok) : ok, { reason: reroute.reason });
      }
    }

    // One copy for everyone, or one per set of recipient-specific header edits (copies.ts).
    let copies: MessageCopy[];
    try {
      const shared = message.render();
      const render = (edits: HeaderEdit[]) => {
        const m = this.deps.createMessage(shared);
        applyEdits(m.headers, edits);
        return m.render();
      };
      copies = splitCopies(tx.envelope.recipients, shared, tx.id, reroute?.copies, render, () => this.deps.queue.newId());
    } catch (e) {
      return finish('error', Replies.internalError(e));
    }
    const copiesLog = copies.length > 1 ? { copies: copies.map((c) => ({ id: c.id, rcpts: c.recipients.map((r) => r.address) })) } : {};
    if (this.policy.lmtp && !rerouted) {
      const replies = new Map<EnvelopeRecipient, string | Error>();
      const outcomes: RecipientOutcome[] = [];
      for (const c of copies) {
        let outs: RecipientOutcome[];
        try {
          outs = await this.deps.queue.deliverNow(c.id, copies.length === 1 ? tx.envelope : { ...tx.envelope, recipients: c.recipients }, c.bytes);
          if (outs.length !== c.recipients.length) throw new Error(`deliverNow gave ${outs.length} outcomes for ${c.recipients.length} recipients`);
        } catch (e) {
          // Only this copy's recipients hear the failure; other copies may already be delivered.
          if (copies.length === 1 && refused.size === 0) return finish('error', Replies.queueFailed(e));
          for (const r of c.recipients) replies.set(r, Replies.queueFailed(e));
          continue;
        }
        outs.forEach((o, i) => {
          // RFC 2033 §4.2: one reply per successful RCPT, in order.
          const reply = lmtpReply(o, tx.id);
          replies.set(c.recipients[i]!, reply.code < 300 ? reply.message : reply);
          outcomes.push(o);
        });
      }
      return finish(folder ? 'quarantined' : 'delivered', perRcpt((r) => replies.get(r) ?? Replies.queueFailed('no outcome')), {
        outcomes: outcomes.map((o) => ({ rcpt: o.recipient.address, status: o.status, code: o.code })),
        ...copiesLog,
      });
    }
    try {
      // One reply for every copy: all of them are spooled, or none is (queue.acceptAll).
      await this.deps.queue.acceptAll(copies.map((c) => ({ id: c.id, envelope: copies.length === 1 ? tx.envelope : { ...tx.envelope, recipients: c.recipients }, message: c.bytes })));
    } catch (e) {
      return finish('error', Replies.queueFailed(e));
    }
    const outcome = rerouted ? 'rerouted' : folder ? 'quarantined' : 'queued';
    const extra = { ...(rerouted ? { rcptsAfter: tx.envelope.recipients.map((r) => r.address) } : folder ? { folder } : {}), ...copiesLog };
    // LMTP after a reroute that changed the recipient list: the message is spooled (the plan no
    // longer matches the RCPTs one to one), and every RCPT hears 250 (RFC 2033 §4.2).
    if (this.policy.lmtp) return finish(outcome, perRcpt(() => Replies.queued(tx.id).message), extra);
    return finish(outcome, Replies.queued(tx.id).message, extra);
  }

  private async proxyData<R extends SmtpReply | string | (string | Error)[]>(
    inline: InlineTransaction,
    message: CreatedMessage,
    recipients: EnvelopeRecipient[],
    finish: (outcome: string, reply: R, extra?: Record<string, unknown>) => R,
  ): Promise<R> {
    let bytes: Buffer;
    try {
      bytes = message.render();
    } catch (e) {
      return finish('error', Replies.internalError(e) as R);
    }
    const replies = await inline.data(bytes);
    const byAddr = new Map<string, SmtpReply>();
    inline.accepted.forEach((a, i) => byAddr.set(a.toLowerCase(), replies[i]!));
    const extra = { nexthop: withoutCredentials(inline.nexthop), backend: replies.map((r) => r.toString()) };
    // RFC 2033 §4.2: one reply per accepted RCPT, in order.
    if (this.policy.lmtp) return finish('proxied', recipients.map((r) => byAddr.get(r.address.toLowerCase()) ?? ProxyReplies.backendFailed('no reply for this recipient')).map((x) => (x.code < 300 ? x.message : x)) as R, extra);
    const ok = replies.filter((r) => r.code < 300);
    if (ok.length === replies.length && ok.length > 0) return finish('proxied', ok[0]!.message as R, extra);
    if (ok.length === 0) return finish('proxy-refused', (replies[0] ?? ProxyReplies.backendFailed('no reply')) as R, extra);
    // An LMTP backend took some recipients and refused others, and an SMTP client can hear only
    // one reply: the delivered ones must not be sent again, so 250, and the refusals are logged.
    return finish('proxied-partial', ok[0]!.message as R, { ...extra, refusedByBackend: inline.accepted.filter((_, i) => replies[i]!.code >= 300) });
  }

  private logTransaction(st: ConnState, tx: Tx, size: number, outcome: string, reply: SmtpReply | string | (string | Error)[], extra: Record<string, unknown>): void {
    // Built only when it will be written: this runs once per message on the hot path.
    if (!st.log.isLevelEnabled('info')) return;
    const replyText = Array.isArray(reply) ? reply.map((r) => (r instanceof SmtpReply ? r.toString() : `250 ${String(r)}`)) : reply instanceof SmtpReply ? reply.toString() : `250 ${reply}`;
    // The client the message came from (XFORWARD's, when it named one), and then the peer it
    // came through.
    const source = tx.envelope.source;
    const client = originClient(source);
    logEvent(st.log, 'info', 'smtp.transaction', {
      qid: tx.id,
      client: { ip: client.address ?? null, helo: client.helo, hostname: client.hostname },
      ...(source.forwarded ? { peer: source.remoteAddress, forwarded: source.forwarded } : {}),
      authUser: st.info.authUser,
      from: tx.envelope.mailFrom,
      rcpts: [...tx.rcpts.values()].map((r) => r.address),
      // LMTP RCPTs that repeated an accepted recipient: each heard that recipient's reply.
      ...(tx.answers.length > tx.rcpts.size ? { repeatedRcpts: tx.answers.length - tx.rcpts.size } : {}),
      size,
      outcome,
      reply: replyText,
      trace: tx.trace.map((t) => ({ plugin: t.plugin, stage: t.stage, verdict: t.verdict, ms: t.ms, ...(t.rcpt ? { rcpt: t.rcpt } : {}), ...(t.rule ? { rule: t.rule, line: t.line } : {}), ...(t.version ? { version: t.version } : {}) })),
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
 * The client our Received line names: the one the message came from (originClient), unless
 * XFORWARD left its address unknown; then the peer it came through, since a Received line's
 * TCP-info needs an address (RFC 5321 §4.4) and a line about the peer is at least true.
 */
export function receivedFrom(facts: OriginFacts): { address: string; hostname?: string; helo?: string } {
  const origin = originClient(facts);
  const from = origin.address !== undefined ? origin : originClient({ ...facts, forwarded: undefined });
  return { ...from, address: from.address ?? facts.remoteAddress };
}

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

/** The recipients a `reroute` verdict refuses, with their replies (by recipient object). */
export function refusedRecipients(recipients: EnvelopeRecipient[], v: Extract<Verdict, { kind: 'reroute' }> | undefined): Map<EnvelopeRecipient, SmtpReply> {
  const out = new Map<EnvelopeRecipient, SmtpReply>();
  if (!v?.refuse) return out;
  for (const r of recipients) {
    const x = v.refuse[r.address.toLowerCase()];
    if (!x) continue;
    const base = replyFromVerdict({ kind: 'reject', ...x });
    out.set(r, new SmtpReply(base.code, base.enhanced, base.text, { ...base.opts, evt: 'smtp.data.rejected' }));
  }
  return out;
}

/**
 * LMTP's replies after the final dot: one per accepted RCPT, in RCPT order, "even if there were
 * multiple successful RCPT commands giving the same forward-path" (RFC 2033 §4.2). `reply` is one
 * reply for the whole message, or one per recipient in `keys` order (the transaction's `rcpts`);
 * `answers` holds the recipient key of each accepted RCPT, so a repeat hears its recipient's reply
 * (the delivery, done once, is the outcome for every RCPT that named it).
 */
export function answerEachRcpt(reply: SmtpReply | string | (string | Error)[], keys: string[], answers: string[]): (string | Error)[] {
  if (!Array.isArray(reply)) return answers.map(() => reply);
  const at = new Map(keys.map((k, i) => [k, i]));
  return answers.map((k) => {
    const i = at.get(k);
    // A list that does not cover every recipient is our fault: no RCPT may hear a 250 by default.
    return (i === undefined ? undefined : reply[i]) ?? Replies.internalError(`no reply for recipient ${k}`);
  });
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
