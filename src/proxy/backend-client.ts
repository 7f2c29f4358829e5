// A small SMTP/LMTP client for talking to a route's next hop while our own client waits: the
// recipient callout (verify.ts) and the in-line proxy. Unlike the queue's client
// (src/transport/smtp-client.ts, one message per session) it is driven command by command, so the
// caller can mirror what its client sends and hand back the backend's own replies.
//
// `BackendSession.establish` sets a session up: greeting, EHLO/LHLO, STARTTLS by the route's TLS
// policy (tls-policy.ts: none / opportunistic / required / verify; smtps:// is implicit TLS),
// EHLO again, then AUTH (PLAIN, else LOGIN) when the route has credentials. A session can carry
// several transactions (backend-pool.ts: RSET between them).
//
// Standards: RFC 5321 (§4.2 multi-line replies, §4.5.2 dot-stuffing, §4.1.1.5 RSET), RFC 2033
// (LHLO, one reply per recipient after DATA), RFC 3463 (enhanced codes, read when present),
// RFC 3207 (STARTTLS: 220, handshake, EHLO again, §4.2), RFC 4954 (AUTH, 235 on success),
// Postfix XCLIENT/XFORWARD (src/transport/forward-client.ts).
// Config keys read: none (the caller passes a parsed next hop and the TLS policy).
import { connect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { ParsedNexthop } from '../transport/outbound.js';
import { chooseCommand, clientIdentity, forwardCommands, offeredAttributes, type ForwardClientMode, type ForwardedClient } from '../transport/forward-client.js';
import type { TlsPolicy } from '../transport/tls-policy.js';

export { xtext } from '../transport/forward-client.js';

export interface BackendReply {
  code: number;
  /** The enhanced code at the start of the first line, when the backend sent one. */
  enhanced?: string;
  /** The text of the last line, enhanced code removed. */
  text: string;
  lines: string[];
}

export class BackendError extends Error {
  override name = 'BackendError';
  constructor(
    message: string,
    /** tls: STARTTLS missing, refused or failed; auth: the backend refused our credentials. */
    readonly kind: 'connect' | 'timeout' | 'closed' | 'protocol' | 'tls' | 'auth',
  ) {
    super(message);
  }
}

export interface BackendOptions {
  /** Our name for EHLO/LHLO. */
  helo: string;
  /** Each reply must arrive within this many ms. */
  timeoutMs: number;
  /** STARTTLS policy (implicit TLS on smtps:// ignores it, but for checking the certificate under `verify`). */
  tls?: TlsPolicy;
  /** Extra trust anchors (PEM) under `verify` (tests use their own CA). */
  tlsCa?: string | string[];
}

const ENH_RE = /^([245]\.\d{1,3}\.\d{1,3}) /;

export function formatReply(r: BackendReply): string {
  return `${r.code} ${r.enhanced ? `${r.enhanced} ` : ''}${r.text}`;
}

export class BackendSession {
  /** EHLO keywords (upper case) with their parameters. */
  features = new Map<string, string>();
  closed = false;
  /** TLS is on (implicit, or after STARTTLS). */
  secure: boolean;
  /** Transactions started on this connection (backend-pool.ts caps them). */
  messages = 0;
  /** The client an accepted XCLIENT made this connection speak for (`clientIdentity`), else null. */
  impersonating: string | null = null;
  private sock: Socket;
  private buf = '';
  private pending: string[] = [];
  private waiter: ((line: string | null) => void) | null = null;
  private failure: BackendError | null = null;
  /** Replies being waited for: a session is only kept while none is (backend-pool.ts). */
  private reading = 0;
  private detach: () => void = () => undefined;

  private constructor(
    sock: Socket,
    readonly lmtp: boolean,
    private readonly opts: BackendOptions,
    secure: boolean,
  ) {
    this.sock = sock;
    this.secure = secure;
    // Each command is a small write answered by the backend: with Nagle's algorithm a write
    // waiting for the peer's delayed ACK would stall every exchange (as in smtp-client.ts).
    if (typeof sock.setNoDelay === 'function') sock.setNoDelay(true);
    this.attach(sock);
  }

  /** Reads lines from `sock` (bytes as latin1, so nothing is lost) until `detach`. */
  private attach(sock: Socket): void {
    const onData = (c: Buffer) => {
      this.buf += c.toString('latin1');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        this.push(line);
      }
    };
    const end = (e?: Error) => {
      if (this.closed) return;
      this.closed = true;
      this.failure ??= new BackendError(e ? `backend connection failed: ${e.message}` : 'backend closed the connection', e ? 'connect' : 'closed');
      this.push(null);
    };
    const onClose = () => end();
    sock.on('data', onData);
    sock.on('error', end);
    sock.on('close', onClose);
    this.detach = () => {
      sock.off('data', onData);
      sock.off('error', end);
      sock.off('close', onClose);
    };
  }

  /** Connects and reads the greeting (a non-2yz greeting throws). */
  static async open(hop: ParsedNexthop, opts: BackendOptions): Promise<BackendSession> {
    const implicit = hop.secure && !hop.socketPath;
    const sock = hop.socketPath
      ? connect({ path: hop.socketPath })
      : implicit
        ? tlsConnect({ host: hop.host, port: hop.port, ...(isIP(hop.host) ? {} : { servername: hop.host }), rejectUnauthorized: (hop.tls ?? opts.tls) === 'verify', ...(opts.tlsCa ? { ca: opts.tlsCa } : {}) })
        : connect({ host: hop.host, port: hop.port });
    const s = new BackendSession(sock, hop.protocol === 'lmtp', opts, implicit);
    const greeting = await s.read();
    if (greeting.code !== 220) {
      s.destroy();
      throw new BackendError(`backend greeting: ${formatReply(greeting)}`, 'protocol');
    }
    return s;
  }

  private push(line: string | null): void {
    if (line === null) {
      const w = this.waiter;
      this.waiter = null;
      w?.(null);
      return;
    }
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w(line);
    } else this.pending.push(line);
  }

  private nextLine(): Promise<string | null> {
    const l = this.pending.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiter = null;
        this.failure = new BackendError(`no reply from the backend within ${this.opts.timeoutMs} ms`, 'timeout');
        this.destroy();
        resolve(null);
      }, this.opts.timeoutMs);
      this.waiter = (x) => {
        clearTimeout(t);
        resolve(x);
      };
    });
  }

  /** True when nothing is in flight, so the next reply read belongs to the next command. */
  get quiet(): boolean {
    return !this.closed && this.reading === 0 && this.pending.length === 0 && this.buf === '';
  }

  /** Reads one (possibly multi-line) reply. */
  async read(): Promise<BackendReply> {
    this.reading++;
    try {
      return await this.readReply();
    } finally {
      this.reading--;
    }
  }

  private async readReply(): Promise<BackendReply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.nextLine();
      if (line === null) throw this.failure ?? new BackendError('backend closed the connection', 'closed');
      const m = /^(\d{3})([ -])(.*)$/.exec(line) ?? /^(\d{3})()$/.exec(line);
      if (!m) {
        this.destroy();
        throw new BackendError(`malformed reply line from the backend: ${JSON.stringify(line.slice(0, 80))}`, 'protocol');
      }
      lines.push(m[3] ?? '');
      if (m[2] !== '-') {
        const code = Number(m[1]);
        const last = lines[lines.length - 1]!;
        const enh = ENH_RE.exec(last);
        return { code, lines, text: enh ? last.slice(enh[0].length) : last, ...(enh ? { enhanced: enh[1]! } : {}) };
      }
    }
  }

  write(data: string | Buffer): void {
    if (this.closed) throw this.failure ?? new BackendError('backend connection is closed', 'closed');
    this.sock.write(data);
  }

  /** Sends one command line and reads its reply. */
  async command(line: string): Promise<BackendReply> {
    this.write(`${line}\r\n`);
    return this.read();
  }

  /** EHLO (LHLO on LMTP) with our name, or `name`, and the feature list. */
  async greet(name = this.opts.helo): Promise<BackendReply> {
    const r = await this.command(`${this.lmtp ? 'LHLO' : 'EHLO'} ${name}`);
    if (r.code !== 250) return r;
    this.features.clear();
    for (const l of r.lines.slice(1)) {
      const [k, ...rest] = l.trim().split(/\s+/);
      if (k) this.features.set(k.toUpperCase(), rest.join(' '));
    }
    return r;
  }

  /**
   * Connects and makes the session ready for MAIL: greeting, EHLO/LHLO, STARTTLS as `policy`
   * says, AUTH with `hop.auth`. Throws BackendError (`tls` when the policy cannot be met or the
   * handshake fails, `auth` when the credentials are refused, `protocol` for a refused EHLO).
   * `policy` is the route's `?tls=`, else the caller's default; LMTP and unix sockets use none
   * unless the route says otherwise.
   */
  static async establish(hop: ParsedNexthop, opts: BackendOptions): Promise<BackendSession> {
    const policy: TlsPolicy = hop.tls ?? opts.tls ?? 'none';
    const s = await BackendSession.open(hop, opts);
    try {
      await s.mustGreet();
      if (!s.secure && policy !== 'none') {
        if (s.features.has('STARTTLS')) {
          await s.starttls(hop.host, policy === 'verify');
          await s.mustGreet();
        } else if (policy === 'required' || policy === 'verify') {
          // RFC 3207 §4.1: a client that requires TLS must not go on without it.
          throw new BackendError('TLS required but the backend does not offer STARTTLS', 'tls');
        }
      }
      if (hop.auth) await s.auth(hop.auth.user, hop.auth.pass);
      return s;
    } catch (e) {
      s.destroy();
      throw e;
    }
  }

  private async mustGreet(): Promise<void> {
    const g = await this.greet();
    if (g.code !== 250) throw new BackendError(`backend refused ${this.lmtp ? 'LHLO' : 'EHLO'}: ${formatReply(g)}`, 'protocol');
  }

  /**
   * STARTTLS (RFC 3207): 220, then the TLS handshake on the same socket; the caller greets
   * again (§4.2: everything learnt before is forgotten). `verify` checks the certificate
   * against `name`.
   */
  async starttls(name: string, verify: boolean): Promise<void> {
    const r = await this.command('STARTTLS');
    if (r.code !== 220) throw new BackendError(`backend refused STARTTLS: ${formatReply(r)}`, 'tls');
    // Anything already received after the 220 came in clear before the handshake: a man in the
    // middle's injection (the CVE-2011-0411 class). Read as replies after TLS, it would put every
    // later reply one step out of line, so the connection is dropped instead.
    if (this.pending.length || this.buf) {
      this.destroy();
      throw new BackendError('backend sent data after its STARTTLS 220, before the TLS handshake', 'tls');
    }
    const plain = this.sock;
    this.detach();
    this.features.clear();
    const secure = await new Promise<TLSSocket>((resolve, reject) => {
      const t = tlsConnect({ socket: plain, host: name, ...(isIP(name) ? {} : { servername: name }), rejectUnauthorized: verify, minVersion: 'TLSv1.2', ...(this.opts.tlsCa ? { ca: this.opts.tlsCa } : {}) });
      const fail = (e: Error) => {
        clearTimeout(timer);
        t.off('secureConnect', ok);
        t.destroy();
        plain.destroy();
        this.closed = true;
        reject(new BackendError(`TLS handshake with the backend failed: ${e.message}`, 'tls'));
      };
      const ok = () => {
        clearTimeout(timer);
        t.off('error', fail);
        resolve(t);
      };
      const timer = setTimeout(() => fail(new Error(`no handshake within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
      t.once('secureConnect', ok);
      t.once('error', fail);
    });
    this.sock = secure;
    this.secure = true;
    this.attach(secure);
  }

  /** AUTH PLAIN, else AUTH LOGIN (RFC 4954); anything but 235 throws (kind `auth`). */
  async auth(user: string, pass: string): Promise<void> {
    const offered = this.features.get('AUTH');
    if (offered === undefined) throw new BackendError('the route has credentials but the backend offers no AUTH', 'auth');
    const mechs = new Set(offered.toUpperCase().split(/\s+/));
    const b64 = (x: string) => Buffer.from(x, 'utf8').toString('base64');
    let r: BackendReply;
    if (mechs.has('PLAIN')) r = await this.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`);
    else if (mechs.has('LOGIN')) {
      r = await this.command('AUTH LOGIN');
      if (r.code === 334) r = await this.command(b64(user));
      if (r.code === 334) r = await this.command(b64(pass));
    } else throw new BackendError(`no AUTH mechanism in common (backend offers ${offered})`, 'auth');
    if (r.code !== 235) throw new BackendError(`backend refused our credentials: ${formatReply(r)}`, 'auth');
  }

  /** Which command would carry `client` under `mode` now (null: none). */
  private forwardCommand(mode: ForwardClientMode): 'XCLIENT' | 'XFORWARD' | null {
    if (this.lmtp) return null;
    return chooseCommand(mode, { xclient: this.features.get('XCLIENT'), xforward: this.features.get('XFORWARD') });
  }

  /**
   * Whether this (reset) connection may carry a transaction for `client`: one speaking for
   * another client through XCLIENT may not, unless the backend takes XCLIENT again (Postfix
   * and smtp-server do not once it is in effect).
   */
  canCarry(mode: ForwardClientMode, client: ForwardedClient): boolean {
    if (this.impersonating === null || this.impersonating === clientIdentity(client)) return true;
    return this.forwardCommand(mode) === 'XCLIENT';
  }

  /**
   * Tells the backend about `client` with XCLIENT or XFORWARD when `mode` asks and the backend
   * offers it (XCLIENT: 220, then EHLO again under the client's HELO name, which Postfix takes
   * for its Received line). `refused` is the backend's non-success reply.
   */
  async forward(mode: ForwardClientMode, client: ForwardedClient): Promise<{ command: 'XCLIENT' | 'XFORWARD' | null; refused?: BackendReply }> {
    if (this.impersonating !== null && this.impersonating === clientIdentity(client)) return { command: 'XCLIENT' };
    const command = this.forwardCommand(mode);
    if (!command) return { command: null };
    const want = command === 'XCLIENT' ? 220 : 250;
    for (const line of forwardCommands(command, offeredAttributes(this.features.get(command)) ?? new Set(), client)) {
      const r = await this.command(line);
      if (r.code !== want) return { command, refused: r };
      if (command === 'XCLIENT') this.impersonating = clientIdentity(client);
    }
    if (command === 'XCLIENT') {
      const g = await this.greet(client.helo && /^[\x21-\x7e]{1,255}$/.test(client.helo) ? client.helo : this.opts.helo);
      if (g.code !== 250) return { command, refused: g };
    }
    return { command };
  }

  /** The socket may keep the process alive (in use) or not (idle in a pool). */
  setRef(ref: boolean): void {
    if (ref) this.sock.ref();
    else this.sock.unref();
  }

  /**
   * Sends the message after a 354 (the caller sent DATA), dot-stuffed (RFC 5321 §4.5.2), ended
   * by <CRLF>.<CRLF>; `bytes` uses CRLF line ends. Reads one reply (SMTP) or `lmtpCount` (LMTP).
   */
  async sendMessage(bytes: Buffer, lmtpCount = 1): Promise<BackendReply[]> {
    this.write(dotStuff(bytes));
    const out: BackendReply[] = [];
    for (let i = 0; i < (this.lmtp ? lmtpCount : 1); i++) out.push(await this.read());
    return out;
  }

  async quit(): Promise<void> {
    if (this.closed) return;
    try {
      this.write('QUIT\r\n');
      await this.read();
    } catch {
      /* the backend may hang up first */
    }
    this.destroy();
  }

  destroy(): void {
    this.closed = true;
    this.sock.destroy();
  }
}

/** Dot-stuffs a CRLF message and appends the end-of-data line. */
export function dotStuff(bytes: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  if (bytes[0] === 0x2e) parts.push(Buffer.from('.'));
  for (let i = bytes.indexOf('\n.'); i >= 0; i = bytes.indexOf('\n.', i + 1)) {
    parts.push(bytes.subarray(start, i + 1), Buffer.from('.'));
    start = i + 1;
  }
  parts.push(bytes.subarray(start));
  const endsWithCrlf = bytes.length >= 2 && bytes[bytes.length - 2] === 0x0d && bytes[bytes.length - 1] === 0x0a;
  parts.push(Buffer.from(endsWithCrlf ? '.\r\n' : '\r\n.\r\n'));
  return Buffer.concat(parts);
}
