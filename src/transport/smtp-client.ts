// Outbound SMTP or LMTP sessions to one host: `openSession` connects, and each `transact` sends
// one message to several recipients in one transaction (RFC 5321 §3.3); pool.ts keeps sessions
// open between messages. Built on nodemailer's SMTPConnection, which does the framing: EHLO/LHLO,
// STARTTLS (RFC 3207), AUTH (RFC 4954), SIZE (RFC 1870), and dot-stuffing of DATA (RFC 5321
// §4.5.2: a line that is just "." goes out as "..").
//
// PIPELINING (RFC 2920): the library waits for MAIL's reply before the RCPTs and for theirs
// before DATA. When the next hop offers it, `sendGrouped` sends [RSET,] MAIL, every RCPT and
// DATA in one write through the library's command queue and its body stream after the 354: two
// round trips a message instead of five on a reused connection.
//
// What this module decides, before MAIL FROM, from the EHLO reply:
//   - 8-bit body and no 8BITMIME (RFC 6152 §3): the message is converted to 7 bit (downgrade.ts:
//     8-bit text parts to quoted-printable, other 8-bit parts to base64); when that is impossible
//     (8-bit header fields, an 8-bit part already labelled quoted-printable/base64) every
//     recipient fails with 554 5.6.3;
//   - SMTPUTF8 needed (the client gave it, or an address is not ASCII) and not offered
//     (RFC 6531 §3.2): 553 5.6.7;
//   - SIZE smaller than the message (RFC 1870 §6): 552 5.3.4;
//   - DSN (RFC 3461 §4) offered: RET and ENVID on MAIL, NOTIFY and ORCPT on each RCPT, with each
//     recipient's own values;
//   - the original client (forward-client.ts), when the destination asks for it and the next hop
//     offers the command: XCLIENT (answered 220, then EHLO again under the client's HELO name)
//     or XFORWARD, before MAIL. XCLIENT lasts for the connection, and servers do not offer it
//     again once it is in effect, so a connection speaking for one client carries only that
//     client's later mail (`canCarry`; pool.ts opens another for anyone else). nodemailer has no
//     such command; it goes out through the library's own command queue (`_sendCommand` /
//     `_responseActions`) and the second EHLO is parsed by its EHLO handler, which refreshes the
//     extension list.
// The result has one entry per recipient: 'sent' (2xx), 'temp' (4xx, or the connection failed
// before that recipient had its answer) or 'perm' (5xx). LMTP (RFC 2033 §4.2) gives one reply
// per accepted recipient after DATA; SMTP's one reply after DATA applies to all of them.
//
// Config keys: none (the caller passes hostname, TLS policy and timeouts).
import { isAscii } from 'node:buffer';
import { connect as netConnect, type Socket } from 'node:net';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { DsnNotify } from '../queue/envelope.js';
import { downgradeTo7bit } from './downgrade.js';
import { chooseCommand, clientIdentity, forwardCommands, offeredAttributes, type ForwardClientMode, type ForwardedClient } from './forward-client.js';
import { tlsOptions, type TlsPolicy } from './tls-policy.js';
import { encodeXtext } from '../smtp/params.js';

export interface Destination {
  /** IP address or host name to connect to; ignored with `socketPath`. */
  host: string;
  port: number;
  /** LMTP over a unix socket (lmtp+unix:/path). */
  socketPath?: string;
  /** The name to verify TLS against and report as Remote-MTA (MX name or route host). */
  name: string;
  protocol: 'smtp' | 'lmtp';
  /** Implicit TLS (smtps://, RFC 8314). */
  secure?: boolean;
  tls: TlsPolicy;
  auth?: { user: string; pass: string };
  /** Send the original client with XCLIENT/XFORWARD when offered (a route's `forward_client`). */
  forwardClient?: ForwardClientMode;
  /** The concurrency budget this connection counts toward (outbound.ts `destinationKey`). */
  destination?: string;
}

export interface OutRecipient {
  address: string;
  notify?: DsnNotify[];
  /** "addr-type;xtext" as received (RFC 3461 §4.2), passed on as it is. */
  orcpt?: string;
}

export interface OutMessage {
  mailFrom: string;
  recipients: OutRecipient[];
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  /** The client used SMTPUTF8 (RFC 6531). */
  smtputf8?: boolean;
  /** Who sent it to us; forwarded when `Destination.forwardClient` asks for it. */
  client?: ForwardedClient;
  message: Buffer;
}

export interface RcptResult {
  status: 'sent' | 'temp' | 'perm';
  code: number;
  enhanced: string;
  text: string;
  /** The reply came from the remote server (not a local decision or a connection failure). */
  remote: boolean;
  /** The TLS handshake failed (opportunistic TLS then retries in clear). */
  tlsFailed?: boolean;
}

export interface SessionResult {
  /** "dns; name" for the DSN Remote-MTA field (RFC 3464 §2.3.5). */
  remoteMta: string;
  /** The next hop offered DSN: it took over notifying (RFC 3461 §4.1 "relayed" otherwise). */
  dsn: boolean;
  /** The next hop refused XCLIENT/XFORWARD for good; the message went as from us (for the log). */
  forwardRefused?: string;
  results: Map<string, RcptResult>;
}

export interface ClientOptions {
  /** Our name in EHLO/LHLO. */
  hostname: string;
  connectTimeoutMs?: number;
  greetingTimeoutMs?: number;
  socketTimeoutMs?: number;
  /** Extra trust anchors (PEM) for certificate checks under `verify` (tests use their own CA). */
  tlsCa?: string | string[];
}

/** True when the message has a byte outside 7-bit ASCII (RFC 6152 §2). */
export function is8bit(message: Buffer): boolean {
  // node:buffer's isAscii is a vectorised scan; a byte loop in JS cost ~2% of a relay's main thread.
  return !isAscii(message);
}

/** NOTIFY and ORCPT of one recipient (RFC 3461 §4), each its own: " NOTIFY=… ORCPT=…" or "". */
function rcptDsnArgs(r: OutRecipient): string {
  const args: string[] = [];
  if (r.notify?.length) args.push(`NOTIFY=${r.notify.join(',')}`);
  if (r.orcpt) args.push(`ORCPT=${r.orcpt}`);
  return args.length ? ` ${args.join(' ')}` : '';
}

/** "250 2.1.5 Ok" → code, enhanced (derived from the class when absent, RFC 3463 §3.1), text. */
export function parseReply(response: string | undefined, fallbackCode: number): { code: number; enhanced: string; text: string } {
  const last = (response ?? '').trim().split(/\r?\n/).pop() ?? '';
  const m = /^([2-5]\d\d)[ -]?(?:([245]\.\d{1,3}\.\d{1,3})\s+)?(.*)$/.exec(last);
  if (!m) return { code: fallbackCode, enhanced: `${String(fallbackCode)[0]}.0.0`, text: last || 'no reply' };
  const code = Number(m[1]);
  return { code, enhanced: m[2] ?? `${m[1]![0]}.0.0`, text: m[3] ?? '' };
}

type Conn = SMTPConnection & {
  _ehloLines?: string[];
  _supportedExtensions: string[];
  _supportedAuth: string[];
  _responseActions: ((str: string) => void)[];
  _sendCommand: (str: string) => void;
  _actionEHLO: (str: string) => void;
  _socket?: Socket;
  _maxAllowedSize: number;
  _recipientQueue?: string[];
  _getDsnRcptToArgs: () => string;
  _responseQueue: string[];
  _processResponse: () => unknown;
  _envelope?: { rejectedErrors?: (SMTPConnection.SMTPError & { recipient?: string })[] } | false;
  _remainder: string;
  _upgradeConnection: (cb: (err: Error | null, secured?: boolean) => void) => void;
  _formatError: (message: string, type: string, response: string | false, command: string) => SMTPConnection.SMTPError;
  _createSendStream: (cb: (err: SMTPConnection.SMTPError | null, response?: string) => void) => NodeJS.WritableStream;
};

/**
 * Replies received in clear after the STARTTLS 220, before the handshake, are a man in the
 * middle's injection (the CVE-2011-0411 class): nodemailer would keep them and read them as the
 * answers to the commands sent over TLS, one step out of line. The upgrade is refused instead,
 * which fails the connection as a TLS failure (ETLS).
 */
function refuseInjectedStarttls(conn: Conn): void {
  const upgrade = conn._upgradeConnection.bind(conn);
  conn._upgradeConnection = (cb) => {
    if (conn._responseQueue.length || conn._remainder) return cb(new Error('the server sent data after its STARTTLS 220, before the TLS handshake'));
    upgrade(cb);
  };
}

function localFailure(status: 'temp' | 'perm', code: number, enhanced: string, text: string): RcptResult {
  return { status, code, enhanced, text, remote: false };
}

/** What opening a session gave: a live session, or the result every recipient gets. */
export type OpenResult = { ok: true; session: ClientSession } | { ok: false; failure: RcptResult };

/**
 * Opens a session: connect, greeting, EHLO/LHLO, STARTTLS by policy, AUTH. Never throws. A
 * failure is `temp` with `remote: false` (the caller tries the next host).
 */
export async function openSession(dest: Destination, opts: ClientOptions): Promise<OpenResult> {
  let socket: Socket | undefined;
  if (dest.socketPath) {
    try {
      socket = await new Promise<Socket>((res, rej) => {
        const s = netConnect(dest.socketPath!);
        s.once('connect', () => res(s)).once('error', rej);
      });
    } catch (e) {
      return { ok: false, failure: localFailure('temp', 451, '4.4.1', `cannot connect to ${dest.socketPath}: ${(e as Error).message}`) };
    }
  }
  const tls = tlsOptions(dest.tls, dest.name);
  if (opts.tlsCa) tls.tls.ca = opts.tlsCa;
  const conn = new SMTPConnection({
    host: dest.host,
    port: dest.port,
    name: opts.hostname,
    lmtp: dest.protocol === 'lmtp',
    secure: !!dest.secure && !dest.socketPath,
    ...tls,
    ...(socket ? { connection: socket } : {}),
    connectionTimeout: opts.connectTimeoutMs ?? 30_000,
    greetingTimeout: opts.greetingTimeoutMs ?? 60_000,
    socketTimeout: opts.socketTimeoutMs ?? 300_000,
    logger: false,
  }) as Conn;
  refuseInjectedStarttls(conn);
  const session = new ClientSession(dest, conn, opts.hostname);
  try {
    await session.step<void>((cb) => conn.connect((err) => cb(err)));
    // Commands and the message go out in several small writes, each answered by the peer: with
    // Nagle's algorithm on, a write that waits for the peer's delayed ACK stalls every
    // transaction by up to 40 ms on loopback and LANs.
    (conn as unknown as { _socket?: Socket })._socket?.setNoDelay(true);
  } catch (e) {
    // A failed handshake shows up as a socket error while the library is upgrading (a bad
    // certificate under `verify`), or as ETLS (STARTTLS refused, or not offered under a
    // required policy).
    const err = e as SMTPConnection.SMTPError;
    const tlsPhase = err.code === 'ETLS' || !!(conn as unknown as { upgrading?: boolean }).upgrading;
    session.close();
    return { ok: false, failure: tlsPhase ? tlsFailure(err) : sessionFailure(err, 'connect') };
  }
  // RFC 3207 §4.1: under a required policy an unencrypted session must not carry the message.
  if ((dest.tls === 'required' || dest.tls === 'verify') && !conn.secure) {
    session.close();
    return { ok: false, failure: localFailure('temp', 451, '4.7.5', 'TLS required but not available at the next hop') };
  }
  if (dest.auth) {
    try {
      await session.step<void>((cb) => conn.login({ user: dest.auth!.user, pass: dest.auth!.pass }, (err) => cb(err)));
    } catch (e) {
      session.close();
      const err = e as SMTPConnection.SMTPError;
      // RFC 4954 §6: 535 is a permanent credentials problem, but it is ours to fix: defer.
      const r = parseReply(err.response, 454);
      return { ok: false, failure: localFailure('temp', 451, '4.7.8', `authentication at the next hop failed: ${r.code} ${r.text}`) };
    }
  }
  return { ok: true, session };
}

/**
 * One open SMTP/LMTP connection that can carry several transactions (pool.ts reuses it).
 * `transact` never throws; afterwards `reusable` says whether the connection may carry another
 * transaction (after `reset`). Whoever holds the session closes it.
 */
export class ClientSession {
  /** Transactions started on this connection. */
  messages = 0;
  /** False once anything went wrong on the connection (it is then only closed). */
  reusable = true;
  /**
   * The client an accepted XCLIENT made this connection speak for (its attributes last for the
   * whole connection, XCLIENT_README), as `clientIdentity`; null while it speaks for us.
   */
  impersonating: string | null = null;
  /** This transaction's XCLIENT/XFORWARD was refused for good (the mail went as from us). */
  private forwardRefused: string | undefined;
  private lastError: SMTPConnection.SMTPError | null = null;
  private ended = false;
  private readonly closedListeners: (() => void)[] = [];

  constructor(
    readonly dest: Destination,
    private readonly conn: Conn,
    /** Our EHLO name. */
    private readonly hostname: string,
  ) {
    // Errors arrive as events as well as callbacks; the first one of each step wins.
    conn.on('error', (e) => {
      this.lastError = e;
      this.dead();
    });
    conn.on('end', () => this.dead());
  }

  get secure(): boolean {
    return this.conn.secure;
  }

  /** Calls `fn` once when the connection ends (the server closed it, or we did). */
  onClosed(fn: () => void): void {
    if (this.ended) fn();
    else this.closedListeners.push(fn);
  }

  /** The socket may keep the process alive (in use) or not (idle in the pool). */
  setRef(ref: boolean): void {
    const sock = (this.conn as unknown as { _socket?: Socket })._socket;
    if (ref) sock?.ref();
    else sock?.unref();
  }

  private dead(): void {
    this.reusable = false;
    if (this.ended) return;
    this.ended = true;
    for (const fn of this.closedListeners.splice(0)) fn();
  }

  /** Runs one library call, turning its callback, 'error' and 'end' into one promise. */
  step<T>(fn: (cb: (err: SMTPConnection.SMTPError | null | undefined, v?: T) => void) => void): Promise<T> {
    const conn = this.conn;
    return new Promise<T>((res, rej) => {
      let done = false;
      const finish = (err: SMTPConnection.SMTPError | null | undefined, v?: T) => {
        if (done) return;
        done = true;
        conn.off('error', onErr);
        conn.off('end', onEnd);
        if (err) rej(err);
        else res(v as T);
      };
      // Replies that came in the same read as the close (a 550 per RCPT, then 421 and a hang-up)
      // are still queued: the library hands them out one per setImmediate, after 'end'. They
      // are acted on first, so each recipient gets the reply the server gave it.
      const onErr = (e: SMTPConnection.SMTPError) => {
        drainReplies(conn);
        finish(e);
      };
      const onEnd = () => {
        drainReplies(conn);
        finish(this.lastError ?? Object.assign(new Error('Connection closed unexpectedly'), { code: 'ECONNECTION' }));
      };
      if (this.ended) return onEnd();
      conn.on('error', onErr);
      conn.on('end', onEnd);
      fn(finish);
    });
  }

  /** RSET (RFC 5321 §4.1.1.5) before a further transaction; false when the connection is gone. */
  async reset(): Promise<boolean> {
    if (!this.reusable) return false;
    try {
      await this.step<void>((cb) => this.conn.reset((err) => cb(err)));
      return true;
    } catch {
      this.reusable = false;
      return false;
    }
  }

  /** The EHLO parameters of `keyword` ("XCLIENT" → "NAME ADDR …"), undefined when not offered. */
  private offered(keyword: string): string | undefined {
    for (const l of this.conn._ehloLines ?? []) {
      const [k, ...rest] = l.trim().split(/\s+/);
      if (k?.toUpperCase() === keyword) return rest.join(' ');
    }
    return undefined;
  }

  /** Which command would carry `msg`'s client now; null: none (not asked for, or not offered). */
  private forwardCommand(msg: OutMessage): 'XCLIENT' | 'XFORWARD' | null {
    if (!msg.client || !this.dest.forwardClient || this.dest.forwardClient === 'none' || this.dest.protocol === 'lmtp') return null;
    return chooseCommand(this.dest.forwardClient, { xclient: this.offered('XCLIENT'), xforward: this.offered('XFORWARD') });
  }

  /**
   * Whether this (reset) connection may carry `msg`. One that speaks for a client carries only
   * that client's mail, unless the server takes XCLIENT again: neither Postfix (3.x) nor
   * smtp-server offers XCLIENT once it is in effect, so in practice a connection is reused for
   * the same client only, and another client's message gets a new connection.
   */
  canCarry(msg: OutMessage): boolean {
    if (this.impersonating === null) return true;
    if (msg.client && this.dest.forwardClient && clientIdentity(msg.client) === this.impersonating) return true;
    return this.forwardCommand(msg) === 'XCLIENT';
  }

  private note(): { forwardRefused?: string } {
    return this.forwardRefused ? { forwardRefused: this.forwardRefused } : {};
  }

  /** Sends one command through the library's queue and returns the server's reply text. */
  private raw(line: string): Promise<string> {
    return this.step<string>((cb) => {
      this.conn._responseActions.push((str) => cb(null, str));
      this.conn._sendCommand(line);
    });
  }

  /** EHLO again (after XCLIENT), letting the library parse the reply into its extension list. */
  private async ehloAgain(name: string): Promise<void> {
    const conn = this.conn;
    conn._supportedExtensions = [];
    conn._supportedAuth = [];
    conn._maxAllowedSize = 0;
    let onConnect: (() => void) | undefined;
    try {
      await this.step<void>((cb) => {
        onConnect = () => cb(null);
        conn.once('connect', onConnect);
        conn._responseActions.push((str) => conn._actionEHLO(str));
        conn._sendCommand(`EHLO ${name}`);
      });
    } finally {
      if (onConnect) conn.off('connect', onConnect);
    }
  }

  /**
   * XCLIENT or XFORWARD for `msg`'s client, before MAIL. A permanent refusal (5yz: say, 501 for
   * an IPv6 ADDR at a server without IPv6, or 550 not authorized) leaves the session as it was,
   * so the message goes on as from us and the refusal is reported in `forwardRefused`; a
   * temporary one (4yz, 421) is the failure every recipient gets (the connection is then not
   * reused). Returns that failure, else null.
   */
  private async forward(msg: OutMessage): Promise<RcptResult | null> {
    const command = this.forwardCommand(msg);
    // Already speaking for this very client (a reused connection): nothing to send.
    if (this.impersonating !== null && msg.client && clientIdentity(msg.client) === this.impersonating) return null;
    if (!command) return null;
    const attrs = offeredAttributes(this.offered(command)) ?? new Set<string>();
    const client = msg.client!;
    const want = command === 'XCLIENT' ? '220' : '250';
    try {
      for (const line of forwardCommands(command, attrs, client)) {
        const reply = await this.raw(line);
        if (!reply.startsWith(want)) {
          const r = parseReply(reply, 451);
          if (r.code >= 500 && this.impersonating === null) {
            this.forwardRefused = `${command} refused: ${r.code} ${r.enhanced} ${r.text}`;
            return null;
          }
          this.reusable = false;
          return { status: 'temp', code: 451, enhanced: '4.7.0', text: `next hop refused ${command}: ${r.code} ${r.text}`, remote: false };
        }
        if (command === 'XCLIENT') this.impersonating = clientIdentity(client);
      }
      // XCLIENT_README: after 220 the session starts again; Postfix takes the HELO name from
      // this EHLO, so it carries the client's own when that is a usable word.
      if (command === 'XCLIENT') await this.ehloAgain(client.helo && /^[\x21-\x7e]{1,255}$/.test(client.helo) ? client.helo : this.hostname);
    } catch (e) {
      this.reusable = false;
      return sessionFailure(e as SMTPConnection.SMTPError, 'connect');
    }
    return null;
  }

  /** One transaction: MAIL, RCPT*, DATA. Every recipient gets a result. */
  async transact(msg: OutMessage): Promise<SessionResult> {
    return (await this.run(msg, false))!;
  }

  /**
   * The same on a session taken from the pool, which gets RSET first (RFC 5321 §4.1.1.5). Null
   * when the RSET fails (the server timed out and left): no message went out, and the caller
   * opens another session.
   */
  transactReused(msg: OutMessage): Promise<SessionResult | null> {
    return this.run(msg, true);
  }

  private async run(msg: OutMessage, reset: boolean): Promise<SessionResult | null> {
    const remoteMta = `dns; ${this.dest.name}`;
    const results = new Map<string, RcptResult>();
    const all = (r: RcptResult, dsn = false): SessionResult => {
      for (const rc of msg.recipients) results.set(rc.address, r);
      return { remoteMta, dsn, results, ...this.note() };
    };
    const conn = this.conn;
    // RFC 2920: with PIPELINING the RSET, MAIL, every RCPT and DATA go out in one write and the
    // body after the DATA reply, two round trips instead of five. XCLIENT/XFORWARD and LMTP keep
    // the step-by-step path (XCLIENT restarts the session; LMTP's replies after DATA differ).
    const grouped = this.dest.protocol === 'smtp' && conn._supportedExtensions.includes('PIPELINING') && !this.needsForward(msg);
    if (reset && !grouped && !(await this.reset())) return null;
    this.messages++;
    this.forwardRefused = undefined;
    const refused = await this.forward(msg);
    if (refused) return all(refused);
    const ext = new Set(conn._supportedExtensions.map((x) => x.toUpperCase()));
    let body = msg.message;
    let eightBit = is8bit(body);
    if (eightBit && !ext.has('8BITMIME')) {
      // RFC 6152 §3: convert to 7 bit for a next hop without 8BITMIME, or return the message.
      const d = downgradeTo7bit(body);
      if (!d.ok) return all(localFailure('perm', 554, '5.6.3', `8-bit message and the next hop does not offer 8BITMIME (RFC 6152): ${d.reason}`));
      body = d.message;
      eightBit = false;
    }
    const needUtf8 = !!msg.smtputf8 || /[^\x20-\x7e]/.test(msg.mailFrom) || msg.recipients.some((r) => /[^\x20-\x7e]/.test(r.address));
    if (needUtf8 && !ext.has('SMTPUTF8')) {
      return all(localFailure('perm', 553, '5.6.7', 'SMTPUTF8 required and not offered by the next hop (RFC 6531)'));
    }
    if (conn._maxAllowedSize && body.length > conn._maxAllowedSize) {
      return all(localFailure('perm', 552, '5.3.4', `message size ${body.length} exceeds the next hop's limit of ${conn._maxAllowedSize}`));
    }
    const dsn = ext.has('DSN');
    if (dsn) {
      // nodemailer's DSN options are per envelope; RFC 3461 §4 gives each recipient its own
      // NOTIFY and ORCPT. The RCPT being sent is the last one queued when this is called.
      const byAddr = new Map(msg.recipients.map((r) => [r.address, r]));
      conn._getDsnRcptToArgs = function (this: Conn) {
        const q = this._recipientQueue ?? [];
        const r = byAddr.get(q[q.length - 1] ?? '');
        return r ? rcptDsnArgs(r) : '';
      };
    }

    const envelope: SMTPConnection.Envelope = {
      from: msg.mailFrom,
      to: msg.recipients.map((r) => r.address),
      size: body.length,
      use8BitMime: eightBit,
      ...(dsn && (msg.ret || msg.envid) ? { dsn: { ...(msg.ret ? { ret: msg.ret === 'FULL' ? ('Full' as const) : ('HDRS' as const) } : {}), ...(msg.envid ? { envid: msg.envid } : {}) } } : {}),
    };
    // nodemailer sends `MAIL FROM:<>` for an empty sender only when `from` is falsy.
    if (!msg.mailFrom) envelope.from = false;

    let info: SMTPConnection.SentMessageInfo;
    try {
      if (grouped) {
        const sent = await this.sendGrouped(msg, body, { reset, eightBit, smtputf8: needUtf8, dsn });
        if (!sent) return null;
        info = sent;
      } else {
        info = await this.step<SMTPConnection.SentMessageInfo>((cb) => conn.send(envelope, body, (err, i) => cb(err, i)));
      }
    } catch (e) {
      // The library's state after a failed transaction is not worth trusting: no reuse.
      this.reusable = false;
      const err = e as SMTPConnection.SMTPError & { rejectedErrors?: (SMTPConnection.SMTPError & { recipient?: string })[] };
      // The recipients the server refused at RCPT keep their own replies whatever failed after
      // (every RCPT refused, DATA refused, the reply after the final dot); the failure is the
      // accepted ones'. The library's own send leaves them on its envelope.
      const refused = err.rejectedErrors ?? (!grouped && conn._envelope ? conn._envelope.rejectedErrors : undefined);
      if (refused?.length) {
        for (const re of refused) results.set(re.recipient ?? '', fromReply(re.response, 451));
        for (const rc of msg.recipients) if (!results.has(rc.address)) results.set(rc.address, sessionFailure(err, 'transaction'));
        return { remoteMta, dsn, results, ...this.note() };
      }
      return all(sessionFailure(err, 'transaction'), dsn);
    }
    const rejected = new Map<string, RcptResult>();
    for (const re of (info.rejectedErrors ?? []) as (SMTPConnection.SMTPError & { recipient?: string })[]) {
      rejected.set(re.recipient ?? '', fromReply(re.response, 451));
    }
    const ok = fromReply(info.response, 250);
    for (const rc of msg.recipients) {
      results.set(rc.address, rejected.get(rc.address) ?? (info.accepted.includes(rc.address) ? { ...ok, status: 'sent' } : ok));
    }
    return { remoteMta, dsn, results, ...this.note() };
  }

  /** True when `msg` needs XCLIENT/XFORWARD sent first (not already speaking for its client). */
  private needsForward(msg: OutMessage): boolean {
    if (!this.forwardCommand(msg)) return false;
    return !(this.impersonating !== null && msg.client && clientIdentity(msg.client) === this.impersonating);
  }

  /**
   * One pipelined transaction (RFC 2920 §3.1): [RSET,] MAIL, RCPT…, DATA in one write, then the
   * replies in order; the body only after a 354 with at least one recipient accepted. Results
   * and errors have the library's shapes, so `run` reads both paths alike. Null when RSET was
   * refused or the connection ended before its reply (nothing delivered).
   *
   * A 354 the body must not follow (MAIL or every RCPT refused, RSET failed) leaves the server
   * waiting for data: the connection is closed without the final dot, so nothing is delivered,
   * and not reused.
   */
  private async sendGrouped(msg: OutMessage, body: Buffer, o: { reset: boolean; eightBit: boolean; smtputf8: boolean; dsn: boolean }): Promise<SMTPConnection.SentMessageInfo | null> {
    const conn = this.conn;
    // The envelope checks of the library's own send (`_setEnvelope`): trimmed addresses, at least
    // one recipient, none empty, no CR, LF or angle brackets.
    const from = msg.mailFrom.trim();
    const to = msg.recipients.map((r) => r.address.trim());
    if (!to.length) throw conn._formatError('No recipients defined', 'EENVELOPE', false, 'API');
    if (to.includes('')) throw conn._formatError('Invalid recipient ""', 'EENVELOPE', false, 'API');
    const bad = [from, ...to].find((a) => /[\r\n<>]/.test(a));
    if (bad !== undefined) throw conn._formatError(`Invalid address ${JSON.stringify(bad)}`, 'EENVELOPE', false, 'API');
    const ext = conn._supportedExtensions;
    const mailArgs: string[] = [];
    if (o.smtputf8) mailArgs.push('SMTPUTF8');
    if (o.eightBit) mailArgs.push('BODY=8BITMIME');
    if (ext.includes('SIZE')) mailArgs.push(`SIZE=${body.length}`);
    if (o.dsn && msg.ret) mailArgs.push(`RET=${msg.ret}`);
    if (o.dsn && msg.envid) mailArgs.push(`ENVID=${encodeXtext(msg.envid)}`);
    const lines: string[] = o.reset ? ['RSET'] : [];
    lines.push(`MAIL FROM:<${from}>${mailArgs.length ? ` ${mailArgs.join(' ')}` : ''}`);
    msg.recipients.forEach((r, i) => lines.push(`RCPT TO:<${to[i]!}>${o.dsn ? rcptDsnArgs(r) : ''}`));
    lines.push('DATA');
    const replies: string[] = [];
    try {
      return await this.step<SMTPConnection.SentMessageInfo | null>((cb) => {
        let abandoned = false;
        const abandon = (err: SMTPConnection.SMTPError | null, dataOpen: boolean) => {
          abandoned = true;
          cb(err, null);
          if (dataOpen) {
            this.reusable = false;
            conn.close();
          }
        };
        const onReply = (str: string) => {
          if (abandoned) return;
          replies.push(str);
          // RSET refused (421: the server timed out): stale, whatever the rest would say.
          if (o.reset && replies.length === 1 && !str.startsWith('2')) return abandon(null, true);
          if (replies.length < lines.length) return;
          let k = 0;
          if (o.reset) k++;
          const mail = replies[k++]!;
          const rcpts = msg.recipients.map(() => replies[k++]!);
          const data = replies[k]!;
          // The server may be reading data after any 2xx/3xx to DATA (the library accepts 250
          // from servers that answer so), but only 354 (RFC 5321 §4.3.2) lets the body follow:
          // any other reply there means the replies are out of step with the commands (a server
          // that sent an extra line), and the body could be taken for the wrong transaction.
          const dataOpen = /^[23]/.test(data);
          const dataGo = data.startsWith('354');
          if (!mail.startsWith('2')) return abandon(conn._formatError('Mail command failed', 'EENVELOPE', mail, 'MAIL FROM'), dataOpen);
          const accepted: string[] = [];
          const rejected: string[] = [];
          const rejectedErrors: (SMTPConnection.SMTPError & { recipient?: string })[] = [];
          msg.recipients.forEach((r, i) => {
            if (rcpts[i]!.startsWith('2')) return void accepted.push(r.address);
            rejected.push(r.address);
            rejectedErrors.push(Object.assign(conn._formatError('Recipient command failed', 'EENVELOPE', rcpts[i]!, 'RCPT TO'), { recipient: r.address }));
          });
          if (!accepted.length) {
            const err = Object.assign(conn._formatError("Can't send mail - all recipients were rejected", 'EENVELOPE', rcpts[0]!, 'RCPT TO'), { rejected, rejectedErrors });
            return abandon(err, dataOpen);
          }
          // A failure from here on is the accepted recipients'; the refused ones keep their own
          // RCPT replies (rejectedErrors).
          const withRefused = (err: SMTPConnection.SMTPError) => Object.assign(err, { rejected, rejectedErrors });
          if (!dataGo) {
            const err = withRefused(conn._formatError('Data command failed', 'EENVELOPE', dataOpen ? `451 4.5.0 unexpected reply to DATA: ${data.trim()}` : data, 'DATA'));
            return dataOpen ? abandon(err, true) : cb(err);
          }
          const stream = conn._createSendStream((err, final) => {
            if (err) return cb(withRefused(err));
            cb(null, { accepted, rejected, rejectedErrors, response: final ?? '', envelopeTime: 0, messageTime: 0, messageSize: body.length } as SMTPConnection.SentMessageInfo);
          });
          stream.end(body);
        };
        for (let i = 0; i < lines.length; i++) conn._responseActions.push(onReply);
        // One write(2) for the whole group.
        const sock = conn._socket;
        sock?.cork();
        for (const l of lines) conn._sendCommand(l);
        sock?.uncork();
      });
    } catch (e) {
      // The connection failed before the RSET was answered, or refused it: a stale pooled session.
      if (o.reset && (replies.length === 0 || !replies[0]!.startsWith('2'))) {
        this.reusable = false;
        return null;
      }
      throw e;
    }
  }

  /**
   * Resolves once the socket is closed on both sides (after `close`), so a connection limit
   * counts it until the next hop has really let go. A peer that never closes its side is cut
   * off after two seconds.
   */
  socketGone(): Promise<void> {
    const sock = this.conn._socket;
    if (!sock || sock.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => sock.destroy(), 2000);
      t.unref();
      sock.once('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** QUIT when the connection is still up, then close. Safe to call more than once. */
  close(): void {
    this.reusable = false;
    try {
      if (this.conn.stage === 'connected' && !(this.conn as unknown as { _destroyed?: boolean })._destroyed) this.conn.quit();
    } catch {
      /* closing anyway */
    }
    this.conn.close();
  }
}

/**
 * Runs one session for one message (no reuse). Never throws: every recipient gets a result.
 * `temp` results with `remote: false` mean the host could not be used (connection, TLS,
 * greeting, AUTH): the caller tries the next host.
 */
export async function sendSession(dest: Destination, msg: OutMessage, opts: ClientOptions): Promise<SessionResult> {
  const opened = await openSession(dest, opts);
  if (!opened.ok) return failedSession(dest, msg, opened.failure);
  try {
    return await opened.session.transact(msg);
  } finally {
    opened.session.close();
  }
}

/** The result of a session that never got as far as a transaction. */
export function failedSession(dest: Destination, msg: OutMessage, failure: RcptResult): SessionResult {
  return { remoteMta: `dns; ${dest.name}`, dsn: false, results: new Map(msg.recipients.map((rc) => [rc.address, failure])) };
}

function fromReply(response: string | undefined, fallback: number): RcptResult {
  const r = parseReply(response, fallback);
  // Only 2xx accepts. A 3xx where a final reply belongs is a server out of step: try later.
  if (r.code >= 300 && r.code < 400) return { status: 'temp', code: 451, enhanced: '4.5.0', text: `unexpected reply: ${r.code} ${r.text}`, remote: true };
  const status = r.code < 400 ? 'sent' : r.code < 500 ? 'temp' : 'perm';
  return { status, ...r, remote: true };
}

/**
 * Hands every complete reply already received to its waiting action, at once (the library
 * takes one per setImmediate). Stops when no reply or no action is left, or a reply is
 * incomplete.
 */
function drainReplies(conn: Conn): void {
  while (conn._responseQueue.length && conn._responseActions.length) {
    const before = conn._responseQueue.length;
    conn._processResponse();
    if (conn._responseQueue.length >= before) return;
  }
}

/** STARTTLS refused or not offered, or the handshake failed: 4.7.5 (RFC 3463), try in clear only if opportunistic. */
function tlsFailure(err: SMTPConnection.SMTPError): RcptResult {
  return { ...localFailure('temp', 451, '4.7.5', `TLS negotiation failed: ${err.message}`), tlsFailed: true };
}

/** A failure of the whole session: a server reply (MAIL, DATA) or a connection problem. */
function sessionFailure(err: SMTPConnection.SMTPError, stage: 'connect' | 'transaction'): RcptResult {
  if (err.response && /^[45]\d\d/.test(err.response)) {
    const r = fromReply(err.response, 451);
    // A 5xx to the greeting, EHLO or STARTTLS says "not this host", not "not this recipient"
    // (RFC 5321 §3.8 / §4.2.5 practice): try the next one, then defer.
    if (stage === 'connect' && r.status === 'perm') return { ...r, status: 'temp', remote: false };
    return stage === 'connect' ? { ...r, remote: false } : r;
  }
  const what = err.code === 'ETLS' ? 'TLS negotiation failed' : err.code === 'ETIMEDOUT' ? 'timed out' : 'connection failed';
  return { ...localFailure('temp', 451, err.code === 'ETLS' ? '4.7.5' : '4.4.1', `${what}: ${err.message}`), ...(err.code === 'ETLS' ? { tlsFailed: true } : {}) };
}

