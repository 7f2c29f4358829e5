// In-line proxy for routes with `mode: proxy` (Postfix's smtpd_proxy_filter, Haraka's
// smtp_forward, per route): the transaction is opened on the backend while our client sends it,
// and the client hears the backend's own answers. Nothing is spooled.
//
//   first proxied RCPT  connect, EHLO/LHLO, XCLIENT (ADDR, NAME, HELO, LOGIN, PROTO, PORT) when the
//                       backend offers it, then EHLO again; MAIL FROM with BODY/SMTPUTF8/SIZE
//                       when offered; the backend's refusal of MAIL is the client's RCPT reply
//   each RCPT           mirrored; the backend's reply is the client's
//   DATA                after our plugin chain ran (header edits applied): DATA, the message,
//                       <CRLF>.<CRLF>; one reply (SMTP) or one per recipient (LMTP backend)
//   failure             a backend that breaks, times out or hangs up before its final reply
//                       gives 451 4.4.2, never 250; without our final dot it keeps nothing
//                       (RFC 5321 §4.1.1.4: the transaction is aborted)
//
// Standards: RFC 5321, RFC 2033 (LMTP), RFC 3463, Postfix XCLIENT_README.
// Config keys read: routes.<domain>.{nexthop, mode, callout.timeout}, hostname.
import type { RouteConfig } from '../delivery/config.js';
import type { Envelope } from '../queue/envelope.js';
import { classMatches, SmtpReply, type EnhancedCode } from '../smtp/replies.js';
import { parseNexthop } from '../transport/outbound.js';
import { BackendSession, formatReply, type BackendReply, type XclientAttrs } from './backend-client.js';
import { CALLOUT_DEFAULTS } from './verify.js';

export const ProxyReplies = {
  backendFailed: (cause: unknown) => new SmtpReply(451, '4.4.2', 'Next hop connection lost, try again later', { cause }),
  backendUnavailable: (cause: unknown) => new SmtpReply(451, '4.4.1', 'Next hop not available, try again later', { cause }),
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
}

export class InlineTransaction {
  /** Recipients the backend accepted, in order (the LMTP replies follow this order). */
  readonly accepted: string[] = [];
  xclient = false;

  private constructor(
    readonly nexthop: string,
    private readonly s: BackendSession,
  ) {}

  get lmtp(): boolean {
    return this.s.lmtp;
  }

  /**
   * Opens the backend side up to MAIL. Throws an SmtpReply: the backend's refusal (its own code)
   * or 451 4.4.1 when it cannot be reached.
   */
  static async open(route: RouteConfig, hostname: string, client: ClientFacts, envelope: Envelope): Promise<InlineTransaction> {
    const timeoutMs = ('callout' in route && route.callout ? route.callout : CALLOUT_DEFAULTS).timeout;
    let s: BackendSession;
    try {
      s = await BackendSession.open(parseNexthop(route.nexthop), { helo: hostname, timeoutMs });
    } catch (e) {
      throw ProxyReplies.backendUnavailable(e);
    }
    const t = new InlineTransaction(route.nexthop, s);
    try {
      const g = await s.greet();
      if (g.code !== 250) throw replyFromBackend(g, '4.0.0');
      const attrs: XclientAttrs = {
        ADDR: client.remoteAddress,
        NAME: client.clientHostname ?? '[UNAVAILABLE]',
        ...(client.remotePort ? { PORT: client.remotePort } : {}),
        ...(client.helo ? { HELO: client.helo } : {}),
        ...(client.authUser ? { LOGIN: client.authUser } : {}),
        PROTO: client.ehlo ? 'ESMTP' : 'SMTP',
      };
      const x = await s.xclient(attrs);
      if (x.sent && x.reply && x.reply.code !== 220) throw replyFromBackend(x.reply, '4.0.0');
      t.xclient = x.sent;
      const params = [
        envelope.body && s.features.has('8BITMIME') ? `BODY=${envelope.body}` : '',
        envelope.smtputf8 && s.features.has('SMTPUTF8') ? 'SMTPUTF8' : '',
      ].filter(Boolean);
      const m = await s.command(`MAIL FROM:<${envelope.mailFrom}>${params.length ? ' ' + params.join(' ') : ''}`);
      if (m.code !== 250) throw replyFromBackend(m, '5.1.0');
      return t;
    } catch (e) {
      s.destroy();
      throw e instanceof SmtpReply ? e : ProxyReplies.backendFailed(e);
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

  /** Ends the backend transaction without a message (client RSET, refusal, disconnect). */
  abort(): void {
    void this.s.quit();
  }

  /** After the transaction. */
  finish(): void {
    void this.s.quit();
  }
}
