// The seam with smtp-server: a subclass of its SMTPServer that creates our SMTPConnection
// subclass, which (1) writes exactly one correct enhanced status code on every reply and
// (2) runs our protocol guards on each command line before the library dispatches it.
//
// Enhanced codes (RFC 2034 §3, RFC 3463): with hideENHANCEDSTATUSCODES:false the library derives
// a code from the reply code and prepends it even to a message that already carries one. `send`
// is the single write site, so the adapter lives there: a text that starts with an enhanced code
// (every SmtpReply does) is written as is; a library text gets the code from our table
// (replies.ts `enhancedForLibraryReply`); the greeting and HELO/EHLO/LHLO replies and 3yz replies
// carry none.
//
// Guards, in order, for each command line (RFC 5321 §4.1.4, §4.5.3.1.4, RFC 3207, RFC 4954):
//   - bytes before the greeting (early talker) → 554 5.5.1 and close
//   - HTTP request or header line on the SMTP port → 554 5.5.1 and close
//   - AUTH continuation that is not base64 → 501 5.5.2 (RFC 4954 §4)
//   - unknown or disabled command → 500 5.5.2; the smtp.max_bad_commands-th → 421 4.7.0 and close
//   - AUTH before TLS where AUTH needs TLS → 538 5.7.11 (RFC 4954 §6)
//   - MAIL/RCPT/DATA without AUTH where AUTH is required → 530 5.7.0 (RFC 4954 §6)
//   - DATA or RSET with an argument, AUTH without a mechanism → 501 5.5.4; AUTH during a mail
//     transaction → 503 5.5.1 (RFC 4954 §4)
//   - MAIL/RCPT parameters (params.ts) → 501 5.5.4 / 555 5.5.4; a path whose quoted local part
//     holds spaces reaches the library's parser as a stand-in (_parseAddressCommand)
//   - HELO/EHLO/LHLO → the `helo` pipeline stage, then the library; a greeting refused by either
//     changes nothing (RFC 5321 §4.1.4), one both accept is recorded (controller.greeted)
//   - ETRN (RFC 1985) → etrn.ts, where the listener has it (then also advertised in EHLO)
//   - XCLIENT / XFORWARD (Postfix extensions) → only from `listen.<name>.xclient.trusted` peers
//
// PROXY protocol (src/proxy/): peers in `listen.<name>.proxy_protocol.trusted` must start with a
// v1 or v2 header, read here before the session starts (PosternServer._handleProxy); the address
// in it is the client's for everything after (ACL, DNSBL, limits, Received). Any other peer whose
// first bytes look like a PROXY header is refused with 554 5.7.1 (never believed).
//
// Session state: the library's session is the reference, and the controller follows it. Each
// time the library starts its session over (`_resetSession`: RSET, an accepted HELO/EHLO, XCLIENT,
// XFORWARD, STARTTLS, the end of DATA) the controller's transaction ends too (sessionReset), and
// so do the client names XFORWARD gave for it (handler_XFORWARD).
//
// XFORWARD and the library: smtp-server writes XFORWARD's ADDR, PORT, NAME and HELO into the
// connection's own client fields (remoteAddress …), as XCLIENT's. Here they describe one
// transaction's original client and hold no standing, so the controller keeps the peer as the
// session's client (session.ts), anything deciding policy here asks `standingAddress`, and the
// library's fields are put back when the transaction ends (endXForward).
// Config keys: none directly (the listener passes ConnectionPolicy).
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { classMatches, enhancedForLibraryReply, LEADING_ENHANCED_RE, Replies, type SmtpReply } from './replies.js';
import { leadingPath, parseMailParams, parseRcptParams } from './params.js';
import { inRanges, type Range } from '../address/cidr.js';
import { logEvent } from '../log/logger.js';
import { readProxyHeader } from '../proxy/proxy-reader.js';
import { V2_SIGNATURE } from '../proxy/proxy-protocol.js';
import type { EtrnService } from './etrn.js';

/** What a listener tells its connections. */
export interface ConnectionPolicy {
  lmtp: boolean;
  /** AUTH is offered (and accepted) only on a TLS connection. */
  authOnlyOverTls: boolean;
  /** MAIL/RCPT/DATA need a successful AUTH first (submission). */
  requireAuth: boolean;
  maxBadCommands: number;
  dsn: boolean;
  smtputf8: boolean;
}

/** The per-listener controller the connection calls back into (session.ts implements it). */
export interface ConnectionController {
  readonly policy: ConnectionPolicy;
  /**
   * Runs the `helo` stage for a proposed greeting; a reply refuses the command. Records nothing:
   * the library may still refuse the name (501), see greeted().
   */
  helo(conn: PosternConnection, hostname: string): Promise<SmtpReply | null>;
  /** The library accepted the HELO/EHLO/LHLO the `helo` stage let through: it is the greeting now. */
  greeted(conn: PosternConnection): void;
  /** The library started its session over (its envelope is gone): any open transaction ends. */
  sessionReset(conn: PosternConnection): void;
  /** The parameters of the MAIL/RCPT command about to be handled by the library. */
  stashParams(conn: PosternConnection, kind: 'mail' | 'rcpt', params: unknown): void;
  /** Logs a reply we sent on our own (guards), with its event name when it has one. */
  logReply(conn: PosternConnection, reply: SmtpReply, detail?: Record<string, unknown>): void;
  /** Connection accounting: called once when the socket is accepted and once when it closes. */
  opened(conn: PosternConnection): void;
  closed(conn: PosternConnection): void;
  /** XCLIENT changed the client's address, name, HELO or login, or XFORWARD named the client of the next transaction. */
  clientChanged?(conn: PosternConnection, via: 'XCLIENT' | 'XFORWARD'): void;
  /**
   * After clientChanged for XCLIENT: admits the client XCLIENT named as a new connection would
   * be admitted (limits, the `connect` stage). A reply refuses it, and the connection closes.
   */
  handedOver?(conn: PosternConnection): Promise<SmtpReply | null>;
  /** XFORWARD's transaction ended: no client is named for it any more (connection.ts). */
  clientRestored?(conn: PosternConnection): void;
}

/** True when `chunk` starts like a PROXY header of either version (a prefix is enough). */
function looksLikeProxyHeader(chunk: Buffer): boolean {
  const n = Math.min(chunk.length, V2_SIGNATURE.length);
  if (n > 0 && chunk.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return true;
  return chunk.subarray(0, 6).toString('latin1') === 'PROXY ';
}

const KNOWN_COMMANDS = new Set(['HELO', 'EHLO', 'LHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'HELP', 'STARTTLS', 'AUTH']);
// Request lines and header lines a browser or proxy would send (postscreen's "HTTP" check).
const HTTP_REQUEST_RE = /^(?:GET|HEAD|POST|PUT|DELETE|OPTIONS|TRACE|CONNECT|PATCH) \S+(?: HTTP\/\d(?:\.\d)?)?$/i;
const HTTP_HEADER_RE = /^(?:Host|User-Agent|Accept(?:-[A-Za-z]+)?|Content-(?:Type|Length)|Connection|Upgrade|Cookie|Referer|Origin|Proxy-[A-Za-z-]+):/i;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function isHttpLine(line: string): boolean {
  return HTTP_REQUEST_RE.test(line) || HTTP_HEADER_RE.test(line);
}

export function isBase64(s: string): boolean {
  return BASE64_RE.test(s);
}

/** The library's view of the client that XFORWARD changes. */
interface ClientFields {
  remoteAddress: string;
  remotePort: number;
  clientHostname: string | false;
  hostNameAppearsAs: string | false;
}

export class PosternConnection extends SMTPConnection {
  badCommands = 0;
  earlyTalker = false;
  private readonly controller: ConnectionController;
  /** ETRN for this listener (smtp only), from the server. */
  private readonly etrn: EtrnService | undefined;
  /** Peers allowed to send XCLIENT / XFORWARD. */
  private readonly xclientTrusted: Range[] | undefined;
  /** Whether this connection came with a PROXY header (read by the server). */
  private readonly proxied: boolean;
  /** How many times the library started its session over (tells an accepted greeting apart). */
  private sessionResets = 0;
  /** The client before XFORWARD and as XFORWARD left it, while its transaction lasts. */
  private xforwarded: { before: ClientFields; after: ClientFields } | undefined;
  private applyingXForward = false;
  private applyingXClient = false;
  /** The library's 220 after an accepted XCLIENT, held until the named client is admitted. */
  private heldGreeting = false;

  constructor(server: PosternServer, socket: Socket | TLSSocket, options: SMTPConnectionOptions | null | undefined, controller: ConnectionController) {
    super(server, socket, options);
    // Replies are small writes the client waits for: never let Nagle hold one back for the
    // client's delayed ACK (that cost clients such as Postfix's smtp-source ~100 ms a message).
    socket.setNoDelay(true);
    this.controller = controller;
    this.etrn = server.etrn;
    this.xclientTrusted = server.xclientTrusted;
    this.proxied = server.proxyTrusted !== undefined && server._expectsProxyHeader(socket);
  }

  /** XCLIENT/XFORWARD by CIDR (the library compares exact addresses), never after XCLIENT ADDR. */
  override _proxyCommandAllowed(command: string): boolean {
    return !!this.xclientTrusted && !this._xClient.has('ADDR') && inRanges(this._originalRemoteAddress, this.xclientTrusted) && this._isSupported(command);
  }

  /**
   * An accepted XCLIENT hands the session to the client it names, as if that client had just
   * connected: the library's 220 waits until the controller has admitted it (limits and the
   * `connect` stage for its address, `handedOver`); a refusal goes out instead, and the
   * connection closes, as for a client refused at connect. The next command waits meanwhile.
   */
  override handler_XCLIENT(command: Buffer, callback: () => void): void {
    const resets = this.sessionResets;
    this.applyingXClient = true;
    this.heldGreeting = false;
    super.handler_XCLIENT(command, () => {
      this.applyingXClient = false;
      // Only an accepted XCLIENT changes anything (the library starts its session over then); a
      // refused one (501, 503, a LOGIN refused) leaves the client as it was.
      if (this.sessionResets === resets) return callback();
      this.controller.clientChanged?.(this, 'XCLIENT');
      const admitted = this.controller.handedOver?.(this) ?? Promise.resolve(null);
      void admitted
        .catch((e: unknown) => Replies.greetingUnavailable(e))
        .then((refusal) => {
          if (refusal) {
            this.controller.logReply(this, refusal);
            this._refuse(refusal, false);
          } else if (this.heldGreeting) this._sendGreeting();
          this.heldGreeting = false;
          callback();
        });
    });
  }

  /**
   * XFORWARD's attributes describe the client of one message (a content filter handing back
   * what it was given), so they last for one mail transaction: Postfix resets them in its
   * mail_reset (RSET, a new greeting, the end of DATA). `xforwarded` keeps what they replaced.
   */
  override handler_XFORWARD(command: Buffer, callback: () => void): void {
    const before = this.xforwarded?.before ?? this.clientFields();
    const resets = this.sessionResets;
    this.applyingXForward = true;
    super.handler_XFORWARD(command, () => {
      this.applyingXForward = false;
      // Accepted: the library starts its session over only then.
      if (this.sessionResets !== resets) {
        // HELO=[UNAVAILABLE] (the original client's greeting is not known) leaves the library
        // with no greeting at all, and it would refuse MAIL until the peer greets again, which
        // would end this XFORWARD: the peer did greet, and its greeting stays in effect.
        if (this.hostNameAppearsAs === '' && before.hostNameAppearsAs) this.hostNameAppearsAs = before.hostNameAppearsAs;
        this.xforwarded = { before, after: this.clientFields() };
        this.controller.clientChanged?.(this, 'XFORWARD');
      }
      callback();
    });
  }

  /**
   * The client address that holds this connection's standing (ETRN's trust, and anything else
   * decided here by address): the peer's, or XCLIENT's, never the one XFORWARD named.
   */
  get standingAddress(): string {
    return this.xforwarded?.before.remoteAddress ?? this.remoteAddress;
  }

  private clientFields(): ClientFields {
    return { remoteAddress: this.remoteAddress, remotePort: this.remotePort, clientHostname: this.clientHostname, hostNameAppearsAs: this.hostNameAppearsAs };
  }

  /**
   * The transaction XFORWARD described is over: what it set goes back, unless it was changed
   * since (a greeting) or is being set now by XCLIENT, whose values then stand (clientChanged).
   */
  private endXForward(x: { before: ClientFields; after: ClientFields }): void {
    this.xforwarded = undefined;
    const keep = (key: string) => this.applyingXClient && this._xClient.has(key);
    if (this.remoteAddress === x.after.remoteAddress && !keep('ADDR')) this.remoteAddress = x.before.remoteAddress;
    if (this.remotePort === x.after.remotePort && !keep('PORT')) this.remotePort = x.before.remotePort;
    if (this.clientHostname === x.after.clientHostname && !keep('NAME')) this.clientHostname = x.before.clientHostname;
    if (this.hostNameAppearsAs === x.after.hostNameAppearsAs && !keep('HELO')) this.hostNameAppearsAs = x.before.hostNameAppearsAs;
    this._xForward.clear();
    // Our state follows the library's again; XCLIENT's own values are applied after (clientChanged).
    this.controller.clientRestored?.(this);
  }

  /**
   * After STARTTLS (RFC 3207 §4.2): the XCLIENT LOGIN and HELO were claims about the client made
   * before TLS; the library has dropped the login and the greeting they set, and its map forgets
   * them too. ADDR, NAME and PORT stay (session.ts, startedTls). XFORWARD's ended with the
   * session reset STARTTLS made (_resetSession).
   */
  forgetClaimsBeforeTls(): void {
    this._xClient.delete('LOGIN');
    this._xClient.delete('HELO');
  }

  override _resetSession(): void {
    if (this.xforwarded && !this.applyingXForward) this.endXForward(this.xforwarded);
    super._resetSession();
    this.sessionResets++;
    this.controller.sessionReset(this);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.greeting(callback, (done) => super.handler_EHLO(command, done));
  }

  override handler_HELO(command: Buffer, callback: () => void): void {
    this.greeting(callback, (done) => super.handler_HELO(command, done));
  }

  /**
   * Runs the library's HELO/EHLO/LHLO handler and tells the controller when it accepted the
   * greeting. The library starts its session over only then; a name it refuses (501: control
   * characters, too long) leaves the previous greeting and any transaction in place, as
   * RFC 5321 §4.1.4 asks of a failed EHLO.
   */
  private greeting(callback: () => void, handler: (done: () => void) => void): void {
    // A greeting ends what XFORWARD named before the library takes the new name: put back after
    // it, a HELO equal to XFORWARD's would be taken for XFORWARD's and undone.
    if (this.xforwarded) this.endXForward(this.xforwarded);
    const resets = this.sessionResets;
    handler(() => {
      if (this.sessionResets !== resets) this.controller.greeted(this);
      callback();
    });
  }

  override init(): void {
    // Early talker (RFC 5321 §4.3.1: the client waits for the greeting). Any byte before we are
    // ready, even a partial line, counts; the library would only see complete lines.
    const sock = this._socket;
    const onData = (chunk: Buffer) => {
      if (!this._ready && !this._closing && !this.earlyTalker) {
        this.earlyTalker = true;
        this.reply(looksLikeProxyHeader(chunk) && !this.proxied ? Replies.proxyHeaderUntrusted() : Replies.earlyTalker(), { proxyHeader: looksLikeProxyHeader(chunk) });
      }
    };
    sock.on('data', onData);
    this.once('ready', () => sock.removeListener('data', onData));
    // A PROXY header from a peer we do not trust for it, arriving after the greeting: refused
    // before the library reads it as commands (the v2 signature even ends in QUIT).
    if (!this.proxied) {
      const firstChunk = (chunk: Buffer) => {
        if (this._ready && !this._closing && !this.earlyTalker && looksLikeProxyHeader(chunk)) {
          this.earlyTalker = true;
          this.reply(Replies.proxyHeaderUntrusted());
        }
      };
      sock.once('data', firstChunk);
    }
    this.controller.opened(this);
    // The accounting (connection limits, the session's abort signal) ends in _onClose, which the
    // library calls for the socket of the moment: STARTTLS removes every listener of the plain
    // socket, so one put there would never run for a TLS session. The plain socket's own close
    // stays as a backstop for a socket that closes before the library's listeners are set.
    sock.once('close', () => this.controller.closed(this));
    // The library's init() waits a fixed 100 ms before the greeting to catch early talkers. That
    // pause is policy, and ours is `smtp.greeting_delay` (session.ts, onConnect): with it at 0 the
    // greeting goes out at once, and a client that talks first is still caught above. The
    // library's total-connections check stays (our own limits run in onConnect too).
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      this.connectionReady();
    });
  }

  override _sendGreeting(): void {
    if (this._closing || this._closed || this.earlyTalker) return;
    // XCLIENT's greeting waits for the named client's admission (handler_XCLIENT).
    if (this.applyingXClient) {
      this.heldGreeting = true;
      return;
    }
    this.emit('ready');
    super._sendGreeting();
  }

  /** Writes one of our replies and closes when it says so. */
  reply(r: SmtpReply, detail?: Record<string, unknown>): void {
    this.controller.logReply(this, r, detail);
    this.send(r.code, r.message);
    if (r.disconnect && r.code !== 421) this.close();
  }

  /** The single write site (see the header): exactly one enhanced code per reply. */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    super.send(code, this.withEnhancedCode(code, data, context), false);
  }

  withEnhancedCode(code: number, data: string | string[] | null | undefined, context?: string | false): string | string[] | null | undefined {
    // RFC 3463 has no class 3: 334 and 354 carry no code.
    if (code >= 300 && code < 400) return data;
    if (Array.isArray(data)) {
      if (context === false && code < 300) {
        // The EHLO/LHLO reply (RFC 2034 §3: no code). AUTH is advertised only where it is accepted.
        const lines = this.controller.policy.authOnlyOverTls && !this.secure ? data.filter((l) => !/^AUTH\b/i.test(l)) : data;
        return this.etrn && !this.controller.policy.lmtp ? [...lines, 'ETRN'] : lines;
      }
      const first = data[0] ?? '';
      const enh = LEADING_ENHANCED_RE.exec(first)?.[0] ?? enhancedForLibraryReply(code, first, this.libraryGuess(code, context));
      return data.map((l) => (LEADING_ENHANCED_RE.test(l) ? l : `${enh} ${l}`));
    }
    const text = data == null ? '' : String(data);
    const own = LEADING_ENHANCED_RE.exec(text)?.[0];
    if (own && classMatches(code, own)) return text;
    // A greeting or HELO reply (context false, 2yz) carries none.
    if (context === false && code < 300) return text;
    const bare = own ? text.slice(own.length).trimStart() : text;
    const enh = enhancedForLibraryReply(code, bare, this.libraryGuess(code, context));
    return bare ? `${enh} ${bare}` : enh;
  }

  private libraryGuess(code: number, context?: string | false): string {
    return this._getEnhancedStatusCode(code, context === false ? undefined : context);
  }

  override _onClose(): void {
    super._onClose();
    this.controller.closed(this);
  }

  /**
   * RFC 5321 §4.1.2: a Quoted-string local part may hold spaces ("john smith"@example.test). The
   * library splits the line at whitespace before it reads the path, so such a path is handed to
   * it as a stand-in without the quoted part, and the real address put back in what it returns;
   * session.ts then parses it with the full grammar (address.ts). An "@" inside the quotes stays
   * refused by the library (a routing trick; see relay-acl).
   */
  override _parseAddressCommand(rawName: string, rawCommand: Buffer | string): ReturnType<SMTPConnection['_parseAddressCommand']> {
    const line = rawCommand.toString();
    const colon = line.indexOf(':');
    const rest = colon < 0 ? '' : line.slice(colon + 1).trimStart();
    const lead = leadingPath(rest);
    if (!lead || !/\s/.test(lead.path)) return super._parseAddressCommand(rawName, rawCommand);
    const inner = lead.path.slice(1, -1).replace(/^@[^\s,:@]+(?:,@[^\s,:@]+)*:/, '');
    const at = inner.lastIndexOf('@');
    if (at < 0 || inner.slice(0, at).includes('@')) return false;
    const parsed = super._parseAddressCommand(rawName, `${line.slice(0, colon + 1)}<quoted${inner.slice(at)}>${lead.after}`);
    if (parsed) parsed.address = inner;
    return parsed;
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    const next = callback ?? (() => undefined);
    const done = (): void => void setImmediate(() => this._whenWritable(next));
    if (this._upgrading || this._closing || this._closed) {
      if (this._closing || this._closed) return next();
      return super._onCommand(command, callback);
    }
    if (!this._ready) {
      // init() already answered; nothing more is said to an early talker.
      if (!this.earlyTalker) {
        this.earlyTalker = true;
        this.reply(Replies.earlyTalker());
      }
      return next();
    }
    const line = command.toString();
    if (this._nextHandler) {
      // A SASL continuation line (RFC 4954 §4): "*" cancels, anything else must be base64.
      const t = line.trim();
      if (t !== '*' && !isBase64(t)) {
        this._nextHandler = false;
        this.reply(Replies.authBadBase64());
        return done();
      }
      return super._onCommand(command, callback);
    }
    if (isHttpLine(line)) {
      this.reply(Replies.httpOnSmtp(), { line: line.slice(0, 100) });
      return next();
    }
    const name = (line.split(' ')[0] ?? '').toUpperCase();
    const policy = this.controller.policy;
    const etrn = name === 'ETRN' ? this.etrn : undefined;
    const xclient = (name === 'XCLIENT' || name === 'XFORWARD') && this._proxyCommandAllowed(name);
    const known = (KNOWN_COMMANDS.has(name) && !(name === 'LHLO' && !policy.lmtp) && !this._isDisabled(name)) || !!etrn || xclient;
    if (!known) {
      this.badCommands++;
      if (this.badCommands >= policy.maxBadCommands) {
        this.reply(Replies.tooManyBadCommands(), { command: name.slice(0, 20) });
        return next();
      }
      this.reply(Replies.unknownCommand(), { command: name.slice(0, 20) });
      return done();
    }
    if (etrn) {
      this._handlerPending = true;
      void etrn
        .handle({ line, remoteAddress: this.standingAddress, greeted: !!this.hostNameAppearsAs, inTransaction: !!this.session.envelope.mailFrom })
        .then((r) => {
          this._handlerPending = false;
          if (this._closing || this._closed) return next();
          this.reply(r);
          done();
        });
      return;
    }
    // RFC 5321 §4.1.1.4-5: no argument; "DATA foo" would otherwise open the message.
    if ((name === 'DATA' || name === 'RSET') && line.trim().length > name.length) {
      this.reply(Replies.commandSyntax(name));
      return done();
    }
    if (name === 'AUTH') {
      if (this.session.envelope.mailFrom) {
        this.reply(Replies.authInTransaction());
        return done();
      }
      const [, mech, initial] = line.trim().split(/\s+/);
      if (mech === undefined) {
        this.reply(Replies.commandSyntax('AUTH mechanism [initial-response]'));
        return done();
      }
      if (policy.authOnlyOverTls && !this.secure) {
        this.reply(Replies.encryptionRequired());
        return done();
      }
      // RFC 4954 §4: an initial response must be base64 too ("=" stands for an empty one).
      // Checked for the mechanisms we offer only; others get the library's 504 5.5.4.
      const offered = this._server.options.authMethods.includes((mech ?? '').toUpperCase());
      if (offered && initial !== undefined && initial !== '=' && !isBase64(initial)) {
        this.reply(Replies.authBadBase64());
        return done();
      }
    }
    if ((name === 'MAIL' || name === 'RCPT' || name === 'DATA') && this.hostNameAppearsAs) {
      if (policy.requireAuth && !this.session.user) {
        this.reply(Replies.authRequired());
        return done();
      }
      if (name === 'MAIL') {
        const p = parseMailParams(line, { dsn: policy.dsn, smtputf8: policy.smtputf8 });
        if (!p.ok) {
          this.reply(p.reply);
          return done();
        }
        this.controller.stashParams(this, 'mail', p.value);
      } else if (name === 'RCPT') {
        const p = parseRcptParams(line, { dsn: policy.dsn });
        if (!p.ok) {
          this.reply(p.reply);
          return done();
        }
        this.controller.stashParams(this, 'rcpt', p.value);
      }
    }
    if (name === 'HELO' || name === 'EHLO' || name === 'LHLO') {
      const parts = line.trim().split(/\s+/);
      const wrongVerb = policy.lmtp ? name !== 'LHLO' : name === 'LHLO';
      // Syntax errors and HELO on LMTP are the library's to answer.
      if (parts.length !== 2 || wrongVerb) return super._onCommand(command, callback);
      this._handlerPending = true;
      void this.controller
        .helo(this, parts[1]!)
        .catch((e: unknown) => Replies.internalError(e))
        .then((r) => {
          this._handlerPending = false;
          if (this._closing || this._closed) return next();
          if (r) {
            this.reply(r);
            return done();
          }
          super._onCommand(command, callback);
        });
      return;
    }
    super._onCommand(command, callback);
  }
}

export interface PosternServerOptions extends SMTPServerOptions {
  controller: ConnectionController;
  /** ETRN (RFC 1985) on this listener; absent: ETRN is an unknown command. */
  etrn?: EtrnService;
  /** Peers that must send a PROXY v1/v2 header first (listen.<name>.proxy_protocol.trusted). */
  proxyTrusted?: Range[];
  /** Peers allowed XCLIENT and XFORWARD (listen.<name>.xclient.trusted). */
  xclientTrusted?: Range[];
  /** The listener's logger (PROXY header events). */
  log?: Logger;
}

/** SMTPServer whose connections are PosternConnections. */
export class PosternServer extends SMTPServer {
  readonly controller: ConnectionController;
  readonly etrn: EtrnService | undefined;
  readonly proxyTrusted: Range[] | undefined;
  readonly xclientTrusted: Range[] | undefined;
  private readonly log: Logger | undefined;
  constructor(options: PosternServerOptions) {
    const { controller, etrn, proxyTrusted, xclientTrusted, log, ...rest } = options;
    // XCLIENT/XFORWARD are offered per connection by _proxyCommandAllowed (CIDR lists); the
    // library options only have to be on for its EHLO keywords and handlers.
    super({ ...rest, ...(xclientTrusted ? { useXClient: true, useXForward: true } : {}) });
    this.controller = controller;
    this.etrn = etrn;
    this.proxyTrusted = proxyTrusted;
    this.xclientTrusted = xclientTrusted;
    this.log = log;
  }

  override _expectsProxyHeader(socket: Socket): boolean {
    return !!this.proxyTrusted && inRanges(socket.remoteAddress ?? '', this.proxyTrusted);
  }

  // smtp-server reads PROXY v1 only; ours reads v1 and v2 (src/proxy/proxy-reader.ts).
  override _handleProxy(socket: Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (!this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback);
    const peer = socket.remoteAddress ?? '';
    readProxyHeader(socket, Replies.proxyHeaderInvalid().toString()).then(
      (src) => {
        const id = BigInt('0x' + randomBytes(10).toString('hex')).toString(32).padStart(16, '0');
        if (this.log) logEvent(this.log, 'debug', 'smtp.proxy_protocol', { cid: id, peer, version: src.version, client: src.remoteAddress ?? null });
        callback(null, { id, ...(src.remoteAddress ? { remoteAddress: src.remoteAddress } : {}), ...(src.remotePort !== undefined ? { remotePort: src.remotePort } : {}) });
      },
      (e: Error) => {
        if (this.log) logEvent(this.log, 'info', 'smtp.proxy_protocol.rejected', { peer, reason: e.message });
        callback(e);
      },
    );
  }

  // Mirrors SMTPServer.connect (smtp-server 3.21), with our connection class.
  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new PosternConnection(this, socket, socketOptions, this.controller);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}
