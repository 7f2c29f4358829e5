// Recipient verification for routed domains (`routes.<domain>.verify`), asked at our RCPT so we
// never accept mail the backend would refuse (no backscatter):
//
//   none     accept (the default)
//   callout  probe the next hop: MAIL FROM:<>, RCPT TO:<addr>, RSET over a connection kept for
//            the next probe (EHLO once per connection). Answers are cached in the store, so all
//            nodes on one Redis share them: key `verify:callout:<address>`, positive for
//            `callout.positive_ttl`, negative (5yz) for `callout.negative_ttl`; temporary
//            answers are not cached. Backend 5yz → 550 5.1.1; backend 4yz, unreachable or
//            timed out → 451 4.4.3, or accept when `callout.on_unreachable: accept`.
//   list     the recipient must be a field of the store hash `verify:list:<domain>` (address in
//            lower case) → else 550 5.1.1; store down → 451 4.3.0.
//
// Every decision is returned with a trace entry (plugin "verify", stage rcpt), which the session
// adds to the transaction's trace. Similar to Postfix's reject_unverified_recipient and Haraka's
// rcpt_to.* plugins.
// Probe connections follow the route's TLS policy and credentials, as mail does (STARTTLS,
// AUTH: backend-client.ts `establish`).
// Config keys read: routes.<domain>.{nexthop, verify, callout.*}, hostname, outbound.tls.
import type { Logger } from 'pino';
import type { CalloutConfig, RouteConfig } from '../delivery/config.js';
import type { TraceEntry } from '../pipeline/types.js';
import type { Store } from '../store/store.js';
import { logEvent } from '../log/logger.js';
import { SmtpReply } from '../smtp/replies.js';
import { parseNexthop } from '../transport/outbound.js';
import { BackendError, type BackendSession, formatReply, type BackendReply } from './backend-client.js';
import { connectBackend } from './backend-pool.js';
import type { TlsPolicy } from '../transport/tls-policy.js';
import { withoutCredentials } from '../policy/routes.js';

export const CALLOUT_DEFAULTS: CalloutConfig = { positive_ttl: 3_600_000, negative_ttl: 600_000, timeout: 30_000, on_unreachable: 'tempfail' };

/** Idle probe connections kept per next hop, and how long one may sit idle. */
const MAX_IDLE_PER_HOP = 4;
const IDLE_MS = 30_000;

export interface VerifyDecision {
  /** null: the recipient may go on; else the reply our client hears. */
  reply: SmtpReply | null;
  trace: TraceEntry;
}

interface CachedAnswer {
  ok: boolean;
  reply: string;
}

export const VerifyReplies = {
  unknown: (cause: string) => new SmtpReply(550, '5.1.1', 'Recipient address rejected: user unknown', { userError: true, cause, evt: 'smtp.rcpt.rejected' }),
  unavailable: (cause: string) => new SmtpReply(451, '4.4.3', 'Recipient address verification unavailable, try again later', { cause, evt: 'smtp.rcpt.rejected' }),
  listUnavailable: (cause: string) => new SmtpReply(451, '4.3.0', 'Recipient address verification unavailable, try again later', { cause, evt: 'smtp.rcpt.rejected' }),
};

/** Keeps probe connections per next hop for reuse. */
class ProbePool {
  private readonly idle = new Map<string, { s: BackendSession; timer: NodeJS.Timeout }[]>();
  /** Connections opened so far (tests and metrics). */
  opened = 0;

  constructor(
    private readonly helo: string,
    private readonly tls: TlsPolicy,
  ) {}

  async acquire(nexthop: string, timeoutMs: number): Promise<{ s: BackendSession; reused: boolean }> {
    const list = this.idle.get(nexthop) ?? [];
    while (list.length) {
      const e = list.pop()!;
      clearTimeout(e.timer);
      if (!e.s.closed) return { s: e.s, reused: true };
    }
    // The route's TLS policy and credentials hold for probes as for mail (backend-pool.ts).
    const hop = parseNexthop(nexthop);
    const s = await connectBackend(hop, { helo: this.helo, timeoutMs, tls: hop.protocol === 'lmtp' || hop.socketPath ? 'none' : this.tls });
    this.opened++;
    return { s, reused: false };
  }

  release(nexthop: string, s: BackendSession): void {
    const list = this.idle.get(nexthop) ?? [];
    if (s.closed || list.length >= MAX_IDLE_PER_HOP) {
      void s.quit();
      return;
    }
    const timer = setTimeout(() => {
      const i = list.findIndex((e) => e.s === s);
      if (i >= 0) list.splice(i, 1);
      void s.quit();
    }, IDLE_MS);
    timer.unref();
    list.push({ s, timer });
    this.idle.set(nexthop, list);
  }

  close(): void {
    for (const list of this.idle.values()) for (const e of list.splice(0)) {
      clearTimeout(e.timer);
      void e.s.quit();
    }
  }
}

export class RecipientVerifier {
  private readonly pool: ProbePool;

  constructor(
    /** `tls`: the policy for routes without `?tls=` (`outbound.tls`; default opportunistic). */
    private readonly deps: { store: Store; log: Logger; hostname: string; tls?: TlsPolicy },
  ) {
    this.pool = new ProbePool(deps.hostname, deps.tls ?? 'opportunistic');
  }

  /** Probe connections opened since start. */
  get connectionsOpened(): number {
    return this.pool.opened;
  }

  /** Decides for one recipient of a routed domain; never throws. */
  async verify(route: RouteConfig, address: string, domain: string): Promise<VerifyDecision | null> {
    if (route.verify === 'none') return null;
    const t0 = Date.now();
    const d = route.verify === 'list' ? await this.list(address, domain) : await this.callout(route, address);
    const trace: TraceEntry = {
      stage: 'rcpt',
      plugin: 'verify',
      verdict: d.reply ? (d.reply.code >= 500 ? 'reject' : 'tempfail') : 'next',
      ms: Date.now() - t0,
      rcpt: address,
      detail: d.detail,
      ...(d.reply ? { code: d.reply.code, enhanced: d.reply.enhanced } : {}),
    };
    logEvent(this.deps.log, 'info', 'proxy.verify', { rcpt: address, method: route.verify, verdict: trace.verdict, detail: d.detail });
    return { reply: d.reply, trace };
  }

  private async list(address: string, domain: string): Promise<{ reply: SmtpReply | null; detail: string }> {
    const key = `verify:list:${domain.toLowerCase()}`;
    try {
      const hit = await this.deps.store.hget(key, address.toLowerCase());
      return hit !== null ? { reply: null, detail: `list ${key}: listed` } : { reply: VerifyReplies.unknown(`not in ${key}`), detail: `list ${key}: not listed` };
    } catch (e) {
      return { reply: VerifyReplies.listUnavailable((e as Error).message), detail: `list ${key}: store unavailable (${(e as Error).message})` };
    }
  }

  private async callout(route: RouteConfig, address: string): Promise<{ reply: SmtpReply | null; detail: string }> {
    const cfg = ('callout' in route ? route.callout : undefined) ?? CALLOUT_DEFAULTS;
    const key = `verify:callout:${address.toLowerCase()}`;
    let cached: CachedAnswer | null = null;
    try {
      const raw = await this.deps.store.get(key);
      if (raw) cached = JSON.parse(raw) as CachedAnswer;
    } catch {
      // Store down or a garbled value: ask the backend instead.
    }
    if (cached) {
      return cached.ok
        ? { reply: null, detail: `callout cache: accepted (${cached.reply})` }
        : { reply: VerifyReplies.unknown(`next hop said ${cached.reply} (cached)`), detail: `callout cache: refused (${cached.reply})` };
    }
    let answer: BackendReply;
    let reused = false;
    try {
      const r = await this.probe(route.nexthop, address, cfg.timeout);
      answer = r.answer;
      reused = r.reused;
    } catch (e) {
      const why = `callout ${withoutCredentials(route.nexthop)}: ${(e as Error).message}`;
      if (cfg.on_unreachable === 'accept') return { reply: null, detail: `${why}; accepted (on_unreachable: accept)` };
      return { reply: VerifyReplies.unavailable(why), detail: why };
    }
    const said = formatReply(answer);
    const how = reused ? 'reused connection' : 'new connection';
    if (answer.code >= 200 && answer.code < 300) {
      await this.remember(key, { ok: true, reply: said }, cfg.positive_ttl);
      return { reply: null, detail: `callout ${withoutCredentials(route.nexthop)} (${how}): accepted (${said})` };
    }
    if (answer.code >= 500) {
      await this.remember(key, { ok: false, reply: said }, cfg.negative_ttl);
      return { reply: VerifyReplies.unknown(`next hop said ${said}`), detail: `callout ${withoutCredentials(route.nexthop)} (${how}): refused (${said})` };
    }
    const why = `callout ${withoutCredentials(route.nexthop)} (${how}): temporary answer (${said})`;
    if (cfg.on_unreachable === 'accept') return { reply: null, detail: `${why}; accepted (on_unreachable: accept)` };
    return { reply: VerifyReplies.unavailable(why), detail: why };
  }

  private async remember(key: string, a: CachedAnswer, ttlMs: number): Promise<void> {
    try {
      await this.deps.store.set(key, JSON.stringify(a), { ttlMs });
    } catch {
      // Not cached this time; the answer itself stands.
    }
  }

  /** MAIL FROM:<>, RCPT TO, RSET; the connection goes back to the pool when RSET succeeded. */
  private async probe(nexthop: string, address: string, timeoutMs: number): Promise<{ answer: BackendReply; reused: boolean }> {
    let { s, reused } = await this.pool.acquire(nexthop, timeoutMs);
    let mail: BackendReply;
    try {
      mail = await s.command('MAIL FROM:<>');
    } catch (e) {
      if (!reused) throw e;
      // The kept connection died while idle (the backend's own timeout): one fresh try.
      ({ s, reused } = await this.pool.acquire(nexthop, timeoutMs));
      mail = await s.command('MAIL FROM:<>');
    }
    if (mail.code !== 250) {
      s.destroy();
      throw new BackendError(`backend refused MAIL FROM:<>: ${formatReply(mail)}`, 'protocol');
    }
    let answer: BackendReply;
    try {
      answer = await s.command(`RCPT TO:<${address}>`);
    } catch (e) {
      s.destroy();
      throw e;
    }
    // The answer stands whatever RSET does; only a clean RSET keeps the connection.
    const rset = await s.command('RSET').catch(() => null);
    if (rset?.code === 250) this.pool.release(nexthop, s);
    else s.destroy();
    return { answer, reused };
  }

  close(): void {
    this.pool.close();
  }
}
