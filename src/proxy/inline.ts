// In-line proxy for routes with `mode: proxy` (Postfix's smtpd_proxy_filter, Haraka's
// smtp_forward, per route): the transaction is opened on the backend while our client sends it,
// and the client hears the backend's own answers. Nothing is spooled.
//
//   first proxied RCPT  a kept backend connection (RSET) or a new one: EHLO/LHLO, STARTTLS by the
//                       route's TLS policy (`?tls=`, else `outbound.tls`; smtps:// is implicit
//                       TLS; a policy that cannot be met is 451 4.7.5), EHLO again, AUTH with
//                       the route's credentials; then the client per `forward_client` (default
//                       XCLIENT ADDR, NAME, HELO, LOGIN, PROTO, PORT, when offered, then EHLO
//                       again: the session's client, which a client named by XFORWARD is not;
//                       XFORWARD sends that one, forward-client.ts); MAIL FROM with BODY/SMTPUTF8
//                       when offered; the backend's refusal of MAIL is the client's RCPT reply
//   each RCPT           mirrored; the backend's reply is the client's
//   DATA                after our plugin chain ran (header edits applied): DATA, the message,
//                       <CRLF>.<CRLF>; one reply (SMTP) or one per recipient (LMTP backend)
//   failure             a backend that breaks, times out or hangs up before its final reply
//                       gives 451 4.4.2, never 250; without our final dot it keeps nothing
//                       (RFC 5321 §4.1.1.4: the transaction is aborted)
//   afterwards          the connection goes back to the backend pool (backend-pool.ts) for the
//                       next transaction, RSET first; a broken one is closed
//
// Standards: RFC 5321, RFC 2033 (LMTP), RFC 3207, RFC 4954, RFC 3463, Postfix XCLIENT_README.
// Config keys read: routes.<domain>.{nexthop, mode, callout.timeout, forward_client}, hostname,
// outbound.tls (the caller passes it), outbound.reuse (through the pool).
import type { RouteConfig } from '../delivery/config.js';
import type { Envelope } from '../queue/envelope.js';
import { classMatches, SmtpReply, type EnhancedCode } from '../smtp/replies.js';
import { parseNexthop } from '../transport/outbound.js';
import { routeForwardMode, type ForwardedClient } from '../transport/forward-client.js';
import type { ForwardedClientInfo } from '../pipeline/origin.js';
import type { TlsPolicy } from '../transport/tls-policy.js';
import { BackendError, BackendSession, formatReply, type BackendReply } from './backend-client.js';
import { BackendPool, connectBackend } from './backend-pool.js';
import { CALLOUT_DEFAULTS } from './verify.js';

export const ProxyReplies = {
  backendFailed: (cause: unknown) => new SmtpReply(451, '4.4.2', 'Next hop connection lost, try again later', { cause }),
  backendUnavailable: (cause: unknown) => new SmtpReply(451, '4.4.1', 'Next hop not available, try again later', { cause }),
  /** The route's TLS policy could not be met (RFC 3463 X.7.5: cryptographic failure). */
  backendTls: (cause: unknown) => new SmtpReply(451, '4.7.5', 'Next hop TLS not available, try again later', { cause }),
  otherDestination: () => new SmtpReply(452, '4.5.3', 'Recipients for another destination must go in a separate transaction', { userError: true, evt: 'smtp.rcpt.rejected' }),
};

/** The backend's reply as ours: same code and text, an enhanced code of the right class. */
export function replyFromBackend(r: BackendReply, fallback: EnhancedCode): SmtpReply {
  let code = r.code;
  // Anything outside 2yz/4yz/5yz is a protocol error on the backend's part.
  if (!(code >= 200 && code < 300) && !(code >= 400 && code < 600)) code = 451;
  const cls = Math.floor(code / 100) as 2 | 4 | 5;
  const enh = r.enhanced && classMatches(code, r.enhanced) ? (r.enhanced as EnhancedCode) : (`${cls}${fallback.slice(1)}` as EnhancedCode);
  const text = (r.text || 'Ok').replace(/[\r\n]/g, ' ');
  return new SmtpReply(code, enh, text, { userError: code >= 500, cause: `next hop said ${formatReply(r)}` });
}

export interface ClientFacts {
  remoteAddress: string;
  remotePort?: number;
  clientHostname?: string;
  helo?: string;
  authUser?: string;
  ehlo: boolean;
  /** The original client XFORWARD named for this transaction: sent on with XFORWARD only (forward-client.ts). */
  forwarded?: ForwardedClientInfo | undefined;
}

export interface InlineOptions {
  /** Backend connections kept between transactions; absent: one connection per transaction. */
  pool?: BackendPool;
  /** The TLS policy when the route's URL has no `?tls=` (`outbound.tls`); LMTP defaults to none. */
  tls?: TlsPolicy;
  /** Extra trust anchors (PEM) under `verify`. */
  tlsCa?: string | string[];
}

/** The client as XCLIENT/XFORWARD describe it. */
export function forwardedClient(c: ClientFacts): ForwardedClient {
  return {
    addr: c.remoteAddress,
    ...(c.remotePort ? { port: c.remotePort } : {}),
    ...(c.clientHostname ? { name: c.clientHostname } : {}),
    ...(c.helo ? { helo: c.helo } : {}),
    ...(c.authUser ? { login: c.authUser } : {}),
    proto: c.ehlo ? 'ESMTP' : 'SMTP',
    source: 'REMOTE',
    ...(c.forwarded ? { origin: c.forwarded } : {}),
  };
}

export class InlineTransaction {
  /** Recipients the backend accepted, in order (the LMTP replies follow this order). */
  readonly accepted: string[] = [];
  xclient = false;
  /** The backend connection came from the pool. */
  reused = false;
  private done = false;

  private constructor(
    readonly nexthop: string,
    private readonly s: BackendSession,
    private readonly release: (s: BackendSession) => void,
  ) {}

  get lmtp(): boolean {
    return this.s.lmtp;
  }

  /** TLS is on towards the backend. */
  get secure(): boolean {
    return this.s.secure;
  }

  /**
   * Opens the backend side up to MAIL. Throws an SmtpReply: the backend's refusal (its own code),
   * 451 4.7.5 when the TLS policy cannot be met, or 451 4.4.1 when it cannot be reached.
   */
  static async open(route: RouteConfig, hostname: string, client: ClientFacts, envelope: Envelope, opts: InlineOptions = {}): Promise<InlineTransaction> {
    const timeoutMs = ('callout' in route && route.callout ? route.callout : CALLOUT_DEFAULTS).timeout;
    const hop = parseNexthop(route.nexthop);
    const tls: TlsPolicy = hop.tls ?? (hop.protocol === 'lmtp' || hop.socketPath ? 'none' : (opts.tls ?? 'opportunistic'));
    const backendOpts = { helo: hostname, timeoutMs, tls, ...(opts.tlsCa ? { tlsCa: opts.tlsCa } : {}) };
    const mode = routeForwardMode(route);
    const fc = forwardedClient(client);
    const pool = opts.pool;
    const key = BackendPool.key(route.nexthop, tls, mode);
    const acquire = async (fresh: boolean): Promise<{ s: BackendSession; reused: boolean }> => {
      try {
        if (pool && !fresh) return await pool.acquire(key, hop, backendOpts, mode, fc);
        const s = await connectBackend(hop, backendOpts);
        s.messages++;
        return { s, reused: false };
      } catch (e) {
        throw e instanceof BackendError && e.kind === 'tls' ? ProxyReplies.backendTls(e) : ProxyReplies.backendUnavailable(e);
      }
    };
    const release = (s: BackendSession) => (pool ? pool.release(key, s) : void s.quit());

    for (let attempt = 0; ; attempt++) {
      const { s, reused } = await acquire(attempt > 0);
      const t = new InlineTransaction(route.nexthop, s, release);
      t.reused = reused;
      try {
        const x = await s.forward(mode, fc);
        if (x.refused) throw replyFromBackend(x.refused, '4.0.0');
        t.xclient = x.command === 'XCLIENT';
        const params = [
          envelope.body && s.features.has('8BITMIME') ? `BODY=${envelope.body}` : '',
          envelope.smtputf8 && s.features.has('SMTPUTF8') ? 'SMTPUTF8' : '',
        ].filter(Boolean);
        const m = await s.command(`MAIL FROM:<${envelope.mailFrom}>${params.length ? ' ' + params.join(' ') : ''}`);
        if (m.code !== 250) throw replyFromBackend(m, '5.1.0');
        return t;
      } catch (e) {
        s.destroy();
        // A kept connection the backend dropped while idle: once more on a new one.
        if (reused && attempt === 0 && e instanceof BackendError) continue;
        throw e instanceof SmtpReply ? e : ProxyReplies.backendFailed(e);
      }
    }
  }

  /** Mirrors one RCPT; the reply is the backend's (2yz: accepted). */
  async rcpt(address: string): Promise<SmtpReply> {
    let r: BackendReply;
    try {
      r = await this.s.command(`RCPT TO:<${address}>`);
    } catch (e) {
      throw ProxyReplies.backendFailed(e);
    }
    const reply = replyFromBackend(r, '5.1.0');
    if (reply.code < 300) this.accepted.push(address);
    return reply;
  }

  /**
   * Sends the message; one reply per accepted recipient (the same one repeated for an SMTP
   * backend). Never a 2yz unless the backend gave it after our final dot.
   */
  async data(bytes: Buffer): Promise<SmtpReply[]> {
    try {
      const go = await this.s.command('DATA');
      if (go.code !== 354) {
        const r = replyFromBackend(go.code === 250 ? { ...go, code: 451 } : go, '4.0.0');
        return this.accepted.map(() => r);
      }
      const replies = await this.s.sendMessage(bytes, this.accepted.length);
      const mapped = replies.map((r) => replyFromBackend(r, '2.0.0'));
      return this.s.lmtp ? mapped : this.accepted.map(() => mapped[0]!);
    } catch (e) {
      this.s.destroy();
      const r = ProxyReplies.backendFailed(e);
      return this.accepted.map(() => r);
    }
  }

  /**
   * Ends the backend transaction without a message (client RSET, refusal, disconnect). The
   * connection goes back to the pool, which sends RSET before its next use.
   */
  abort(): void {
    this.end();
  }

  /** After the transaction. */
  finish(): void {
    this.end();
  }

  private end(): void {
    if (this.done) return;
    this.done = true;
    this.release(this.s);
  }
}
