// A small SMTP/LMTP client for talking to a route's next hop while our own client waits: the
// recipient callout (verify.ts) and the in-line proxy. Unlike the queue's client
// (src/transport/smtp-client.ts, one message per session) it is driven command by command, so the
// caller can mirror what its client sends and hand back the backend's own replies.
//
// Standards: RFC 5321 (§4.2 multi-line replies, §4.5.2 dot-stuffing, §4.1.1.5 RSET), RFC 2033
// (LHLO, one reply per recipient after DATA), RFC 3463 (enhanced codes, read when present),
// Postfix XCLIENT (XCLIENT_README: attributes xtext-encoded; the server answers 220 and the
// client greets again).
// Not here yet: STARTTLS and AUTH towards the backend (smtps:// is implicit TLS and works).
// Config keys read: none (the caller passes a parsed next hop).
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ParsedNexthop } from '../transport/outbound.js';

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
    readonly kind: 'connect' | 'timeout' | 'closed' | 'protocol',
  ) {
    super(message);
  }
}

export interface BackendOptions {
  /** Our name for EHLO/LHLO. */
  helo: string;
  /** Each reply must arrive within this many ms. */
  timeoutMs: number;
}

/** The XCLIENT attributes we forward (Postfix: NAME, ADDR, PORT, HELO, LOGIN, PROTO). */
export interface XclientAttrs {
  ADDR?: string;
  NAME?: string;
  PORT?: number;
  HELO?: string;
  LOGIN?: string;
  PROTO?: 'SMTP' | 'ESMTP';
}

const ENH_RE = /^([245]\.\d{1,3}\.\d{1,3}) /;

export function formatReply(r: BackendReply): string {
  return `${r.code} ${r.enhanced ? `${r.enhanced} ` : ''}${r.text}`;
}

/** XCLIENT values are xtext (RFC 3461 §4): "+", "=" and anything outside 33-126 as +XX. */
export function xtext(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => (b < 33 || b > 126 || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b))).join('');
}

export class BackendSession {
  /** EHLO keywords (upper case) with their parameters. */
  features = new Map<string, string>();
  closed = false;
  private buf = '';
  private pending: string[] = [];
  private waiter: ((line: string | null) => void) | null = null;
  private failure: BackendError | null = null;

  private constructor(
    private readonly sock: Socket,
    readonly lmtp: boolean,
    private readonly opts: BackendOptions,
  ) {
    sock.setEncoding('latin1');
    sock.on('data', (c: string) => {
      this.buf += c;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        this.push(line);
      }
    });
    const end = (e?: Error) => {
      if (this.closed) return;
      this.closed = true;
      this.failure ??= new BackendError(e ? `backend connection failed: ${e.message}` : 'backend closed the connection', e ? 'connect' : 'closed');
      this.push(null);
    };
    sock.on('error', end);
    sock.on('close', () => end());
  }

  /** Connects and reads the greeting (a non-2yz greeting throws). */
  static async open(hop: ParsedNexthop, opts: BackendOptions): Promise<BackendSession> {
    const sock = hop.socketPath
      ? connect({ path: hop.socketPath })
      : hop.secure
        ? tlsConnect({ host: hop.host, port: hop.port, servername: hop.host, rejectUnauthorized: hop.tls === 'verify' })
        : connect({ host: hop.host, port: hop.port });
    const s = new BackendSession(sock, hop.protocol === 'lmtp', opts);
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

  /** Reads one (possibly multi-line) reply. */
  async read(): Promise<BackendReply> {
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
   * Sends XCLIENT with the attributes the backend offers, then greets again (the backend
   * answers 220 and starts a new session). Returns false when the backend does not offer it.
   */
  async xclient(attrs: XclientAttrs): Promise<{ sent: boolean; reply?: BackendReply }> {
    const offered = this.features.get('XCLIENT');
    if (offered === undefined) return { sent: false };
    const allowed = new Set(offered.toUpperCase().split(/\s+/));
    const parts = Object.entries(attrs)
      .filter(([k, v]) => v !== undefined && v !== '' && allowed.has(k))
      .map(([k, v]) => `${k}=${xtext(String(v))}`);
    if (parts.length === 0) return { sent: false };
    const r = await this.command(`XCLIENT ${parts.join(' ')}`);
    if (r.code !== 220) return { sent: true, reply: r };
    // The session is the original client's now; Postfix takes the HELO name from this EHLO
    // (it replaces the XCLIENT HELO attribute), so it carries the client's name.
    const g = await this.greet(attrs.HELO && /^[\x21-\x7e]+$/.test(attrs.HELO) ? attrs.HELO : this.opts.helo);
    return { sent: true, reply: g.code === 250 ? r : g };
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
