// Outbound delivery of one message to the recipients of one destination (a domain by MX, or a
// `routes` next hop), RFC 5321 §5.1 and §4.5.4:
//   - next hop: a route URL (smtp://[user:pass@]host[:port][?tls=LEVEL], smtps://…, lmtp://…,
//     lmtp+unix:/path), or the domain's MX hosts (mx.ts) on `outbound.mx_port`;
//   - every host and address in order; recipients answered 2xx or 5xx are settled, recipients
//     answered 4xx (or left without an answer because the connection failed) go on to the next
//     host (RFC 5321 §5.1 "try the next"); what is still open at the end is deferred;
//   - null MX → 556 5.1.10 (RFC 7505 §4.2), no mail host → 550 5.1.2, DNS trouble → 451 4.4.3;
//   - opportunistic TLS whose handshake fails is tried again in clear on the same address;
//   - concurrency: at most `outbound.concurrency.total` deliveries at once, and
//     `outbound.concurrency.per_domain` per destination; callers wait their turn. The same limits
//     bound open connections, idle cached ones included (pool.ts);
//   - connection reuse (pool.ts): a session stays open for the next message to the same host;
//   - a route's `forward_client` (forward-client.ts): the message's original client goes to the
//     next hop with XCLIENT or XFORWARD when it offers them (never for MX delivery);
//   - per-destination back-off: when no host of a destination could be reached at all, further
//     deliveries to it are deferred without connecting until its back-off ends (it grows with
//     `outbound.retry` and resets on the first success). Results then carry `retryAt`.
//
// Config keys: `hostname`, `outbound.mx_port`, `outbound.tls`, `outbound.retry`,
// `outbound.concurrency`, `outbound.reuse`, `routes.<domain>.forward_client`.
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Resolver } from '../dns/resolver.js';
import { DnsError } from '../dns/resolver.js';
import type { RemoteVia } from '../delivery/router.js';
import { retryDelay } from '../queue/backoff.js';
import { logEvent } from '../log/logger.js';
import { MxResolver } from './mx.js';
import { ConnectionPool } from './pool.js';
import { sendSession, type ClientOptions, type Destination, type OutMessage, type RcptResult } from './smtp-client.js';
import { TLS_POLICIES, type TlsPolicy } from './tls-policy.js';
import { routeForwardMode, type ForwardClientMode } from './forward-client.js';

export interface OutboundResult extends RcptResult {
  /** "dns; host" of the server that gave the final answer (RFC 3464 §2.3.5). */
  remoteMta?: string;
  /** That server offered DSN, so it notifies from now on (else we owe a "relayed" notice). */
  nextHopDsn?: boolean;
  /** The destination is in back-off: do not retry before this time (ms since the epoch). */
  retryAt?: number;
}

export interface ParsedNexthop {
  protocol: 'smtp' | 'lmtp';
  host: string;
  port: number;
  socketPath?: string;
  secure: boolean;
  tls?: TlsPolicy;
  auth?: { user: string; pass: string };
}

/** Parses a route's next hop URL (the config schema has checked its scheme). */
export function parseNexthop(nexthop: string): ParsedNexthop {
  if (nexthop.startsWith('lmtp+unix:')) {
    const path = nexthop.slice('lmtp+unix:'.length).replace(/^\/\/(?=\/)/, '');
    return { protocol: 'lmtp', host: 'localhost', port: 0, socketPath: path, secure: false, tls: 'none' };
  }
  const u = new URL(nexthop);
  const scheme = u.protocol.replace(/:$/, '');
  const protocol = scheme === 'lmtp' ? 'lmtp' : 'smtp';
  const secure = scheme === 'smtps';
  const port = u.port ? Number(u.port) : scheme === 'lmtp' ? 24 : secure ? 465 : 25;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const tlsParam = u.searchParams.get('tls');
  const tls = tlsParam && (TLS_POLICIES as readonly string[]).includes(tlsParam) ? (tlsParam as TlsPolicy) : undefined;
  const auth = u.username ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : undefined;
  return { protocol, host, port, secure, ...(tls ? { tls } : {}), ...(auth ? { auth } : {}) };
}

/** A key naming where mail goes: one back-off and concurrency budget each. */
export function destinationKey(domain: string, via: RemoteVia): string {
  return via.type === 'route' ? `route:${via.nexthop}` : `mx:${domain.toLowerCase()}`;
}

const MAX_ADDRESSES = 10;

export interface OutboundOptions {
  config: Config;
  dns: Resolver;
  log: Logger;
  client?: Partial<ClientOptions>;
  /** For tests: replaces the session runner (the connection pool by default). */
  session?: typeof sendSession;
}

class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((r) => this.waiters.push(r));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w();
    else this.active--;
  }
  get idle(): boolean {
    return this.active === 0 && this.waiters.length === 0;
  }
}

export class Outbound {
  readonly mx: MxResolver;
  private readonly total: Semaphore;
  private readonly perDest = new Map<string, Semaphore>();
  private readonly backoff = new Map<string, { failures: number; until: number }>();
  private readonly session: typeof sendSession;
  readonly pool: ConnectionPool;

  constructor(private readonly opts: OutboundOptions) {
    this.mx = new MxResolver(opts.dns);
    const ob = opts.config.outbound;
    this.total = new Semaphore(ob.concurrency.total);
    this.pool = new ConnectionPool({
      maxMessages: ob.reuse.max_messages,
      idleTimeoutMs: ob.reuse.idle_timeout,
      idleLimit: ob.concurrency.per_domain,
      total: ob.concurrency.total,
      perDestination: ob.concurrency.per_domain,
    });
    this.session = opts.session ?? ((dest, msg, clientOpts) => this.pool.send(dest, msg, clientOpts));
  }

  /** Closes idle connections (daemon stop). Deliveries in progress finish on their own. */
  close(): void {
    this.pool.close();
  }

  /** Forgets every destination's back-off (`postern queue retry`, ETRN). */
  resetBackoff(): void {
    this.backoff.clear();
  }

  /** Delivers `msg` to its recipients (all of `domain`, or of one route). One result each. */
  async deliver(domain: string, via: RemoteVia, msg: OutMessage): Promise<Map<string, OutboundResult>> {
    const key = destinationKey(domain, via);
    const bo = this.backoff.get(key);
    if (bo && bo.until > Date.now()) {
      const r: OutboundResult = { status: 'temp', code: 451, enhanced: '4.4.1', text: `destination ${key} unreachable, backing off`, remote: false, retryAt: bo.until };
      return new Map(msg.recipients.map((rc) => [rc.address, r]));
    }
    let sem = this.perDest.get(key);
    if (!sem) this.perDest.set(key, (sem = new Semaphore(this.opts.config.outbound.concurrency.per_domain)));
    await sem.acquire();
    await this.total.acquire();
    try {
      const out = await this.run(domain, via, msg);
      // Back-off only when nothing answered at all: a host that replies is up.
      const reached = [...out.values()].some((r) => r.remote);
      const allTemp = [...out.values()].every((r) => r.status === 'temp');
      if (reached || !allTemp) this.backoff.delete(key);
      else {
        const failures = (this.backoff.get(key)?.failures ?? 0) + 1;
        const until = Date.now() + retryDelay(this.opts.config.outbound.retry, failures);
        this.backoff.set(key, { failures, until });
      }
      return out;
    } finally {
      this.total.release();
      sem.release();
      if (sem.idle) this.perDest.delete(key);
    }
  }

  private async run(domain: string, via: RemoteVia, msg: OutMessage): Promise<Map<string, OutboundResult>> {
    const final = new Map<string, OutboundResult>();
    const settleAll = (r: OutboundResult) => {
      for (const rc of msg.recipients) final.set(rc.address, r);
      return final;
    };
    let candidates: { address: string; name: string; port: number; hop?: ParsedNexthop }[];
    try {
      candidates = await this.candidates(domain, via);
    } catch (e) {
      if (e instanceof PermanentRouteError) return settleAll({ status: 'perm', code: e.code, enhanced: e.enhanced, text: e.message, remote: false });
      const why = e instanceof DnsError ? e.message : `next hop lookup failed: ${(e as Error).message}`;
      return settleAll({ status: 'temp', code: 451, enhanced: '4.4.3', text: why, remote: false });
    }

    const key = destinationKey(domain, via);
    const forwardClient = this.forwardMode(via);
    let open = msg.recipients;
    let lastTemp: OutboundResult | null = null;
    for (const c of candidates.slice(0, MAX_ADDRESSES)) {
      if (open.length === 0) break;
      const hop = c.hop;
      const dest: Destination = {
        host: c.address,
        port: c.port,
        name: c.name,
        protocol: hop?.protocol ?? 'smtp',
        secure: hop?.secure ?? false,
        tls: hop?.tls ?? (hop?.protocol === 'lmtp' ? 'none' : this.opts.config.outbound.tls),
        ...(hop?.socketPath ? { socketPath: hop.socketPath } : {}),
        ...(hop?.auth ? { auth: hop.auth } : {}),
        ...(forwardClient !== 'none' ? { forwardClient } : {}),
        destination: key,
      };
      const clientOpts: ClientOptions = { hostname: this.opts.config.hostname, ...this.opts.client };
      let s = await this.session(dest, { ...msg, recipients: open }, clientOpts);
      if (dest.tls === 'opportunistic' && [...s.results.values()].some((r) => r.tlsFailed)) {
        // RFC 7435 §3: opportunistic security falls back to clear text rather than not deliver.
        s = await this.session({ ...dest, tls: 'none' }, { ...msg, recipients: open }, clientOpts);
      }
      const still: typeof open = [];
      for (const rc of open) {
        const r = s.results.get(rc.address);
        const res: OutboundResult = r ? { ...r, ...(r.remote ? { remoteMta: s.remoteMta } : {}), nextHopDsn: s.dsn } : { status: 'temp', code: 451, enhanced: '4.4.1', text: 'no answer for this recipient', remote: false };
        if (res.status === 'temp') {
          still.push(rc);
          lastTemp = res;
          final.set(rc.address, res);
        } else {
          final.set(rc.address, res);
        }
      }
      logEvent(this.opts.log, 'debug', 'outbound.session', { host: c.name, address: c.address, rcpts: open.length, deferred: still.length });
      // The next hop would not take the original client: the mail went as from us.
      if (s.forwardRefused) logEvent(this.opts.log, 'warn', 'outbound.session', { host: c.name, address: c.address, forwardRefused: s.forwardRefused }, 'next hop refused the original client');
      open = still;
    }
    if (candidates.length === 0 && open.length) return settleAll({ status: 'temp', code: 451, enhanced: '4.4.1', text: 'no address to connect to', remote: false });
    for (const rc of open) if (!final.has(rc.address)) final.set(rc.address, lastTemp ?? { status: 'temp', code: 451, enhanced: '4.4.1', text: 'not delivered', remote: false });
    return final;
  }

  /** The route's `forward_client`; MX delivery never forwards (the next hop is not ours). */
  private forwardMode(via: RemoteVia): ForwardClientMode {
    // `via` carries the route's own settings, whether it came from the config or the store.
    return via.type === 'route' ? routeForwardMode(via) : 'none';
  }

  /** Addresses to try, in order. Throws PermanentRouteError for null MX / no mail host. */
  private async candidates(domain: string, via: RemoteVia): Promise<{ address: string; name: string; port: number; hop?: ParsedNexthop }[]> {
    if (via.type === 'route') {
      const hop = parseNexthop(via.nexthop);
      if (hop.socketPath) return [{ address: hop.host, name: hop.socketPath, port: 0, hop }];
      if (isIP(hop.host)) return [{ address: hop.host, name: hop.host, port: hop.port, hop }];
      const r = await this.mx.hostAddresses(hop.host);
      // A name our resolver cannot place is left to the system resolver (nodemailer's lookup).
      const addrs = r.length ? r : [hop.host];
      return addrs.map((address) => ({ address, name: hop.host, port: hop.port, hop }));
    }
    const res = await this.mx.resolve(domain);
    if (res.kind === 'null-mx') throw new PermanentRouteError(556, '5.1.10', `${domain} accepts no mail (null MX, RFC 7505)`);
    if (res.kind === 'no-host') throw new PermanentRouteError(550, '5.1.2', res.reason);
    const port = this.opts.config.outbound.mx_port;
    return res.hosts.flatMap((h) => h.addresses.map((address) => ({ address, name: h.name, port })));
  }
}

class PermanentRouteError extends Error {
  constructor(
    readonly code: number,
    readonly enhanced: string,
    message: string,
  ) {
    super(message);
  }
}
