// Next hops (routes) added at run time through the REST API (/v1/policies/relay/routes), on top of
// the config file's `routes`. Kept in the store hash `policy:relay:routes` (domain key → JSON
// StoredRoute) and read on every lookup by the SMTP front end (is this a domain we accept mail
// for? proxy mode? verify?), relay-acl, the router (which next hop?) and the dry-run, so a change
// applies to the next transaction and the next delivery on every node, without a restart.
//
// Keys match as in the config (src/delivery/routes.ts): "corp.example" exactly, ".corp.example"
// every subdomain. A store route for the same key as a config route replaces it while it exists;
// deleting it brings the config one back. Credentials and the TLS policy are kept apart from the
// next hop URL in the store (so the API can show the route without them) and are folded into the
// URL the transport reads (smtp://user:pass@host:port?tls=LEVEL, see transport/outbound.ts) only
// when the route table is built. The password is never returned by the API.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { RouteConfig } from '../delivery/config.js';
import { RouteTable } from '../delivery/routes.js';
import type { Store } from '../store/store.js';
import type { TlsPolicy } from '../transport/tls-policy.js';
import { PolicyHash } from './store-hash.js';

export const RELAY_ROUTES_KEY = 'policy:relay:routes';

export interface StoredRoute {
  /** "corp.example" or ".corp.example", lower case, no trailing dot. */
  domain: string;
  /** smtp://host:port, smtps://…, lmtp://…, lmtp+unix:/path; never with credentials or a query. */
  nexthop: string;
  /** Absent: outbound.tls. */
  tls?: TlsPolicy;
  auth?: { username: string; password: string };
  mode: 'queue' | 'proxy';
  verify: 'none' | 'callout' | 'list';
  /** Absent: the config default (xclient for proxy routes, none for queue routes). */
  forward_client?: 'none' | 'xclient' | 'xforward' | 'auto';
  updated_at: string;
}

/** What the API shows: the route without its password. */
export type PublicRoute = Omit<StoredRoute, 'auth'> & { auth?: { username: string } };

const LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const DOMAIN_KEY = new RegExp(`^\\.?(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*$`);

/**
 * The normalised route key, or null when `s` is neither a domain nor a ".domain" wildcard. At
 * least two labels: a routed domain is one we relay for, from anyone, so "com" or ".com" would
 * open the gateway to a whole top-level domain.
 */
export function routeKey(s: string): string | null {
  const k = s.trim().toLowerCase().replace(/\.$/, '');
  return DOMAIN_KEY.test(k) && k.replace(/^\./, '').includes('.') ? k : null;
}

/**
 * Why `nexthop` is not a next hop the API stores, or null when it is one. Credentials and the TLS
 * policy have fields of their own, so a URL carrying them is refused rather than half-stored.
 */
export function nexthopProblem(nexthop: string): string | null {
  if (nexthop.startsWith('lmtp+unix:')) {
    const path = nexthop.slice('lmtp+unix:'.length);
    return path.startsWith('/') && !/[\0\r\n]/.test(path) ? null : 'lmtp+unix: needs an absolute socket path, e.g. lmtp+unix:/run/dovecot/lmtp';
  }
  let u: URL;
  try {
    u = new URL(nexthop);
  } catch {
    return 'expected smtp://host:port, smtps://host:port, lmtp://host:port or lmtp+unix:/path';
  }
  if (!['smtp:', 'smtps:', 'lmtp:'].includes(u.protocol)) return 'the scheme must be smtp, smtps, lmtp or lmtp+unix';
  if (!u.hostname) return 'the next hop needs a host';
  if (u.username || u.password) return 'credentials go in `auth`, not in the URL';
  if (u.search || u.hash) return 'the TLS policy goes in `tls`; the URL takes no query or fragment';
  if (u.pathname && u.pathname !== '/') return 'the next hop URL takes no path';
  return null;
}

/** The URL the transport reads: credentials and ?tls= folded in. */
export function transportNexthop(r: Pick<StoredRoute, 'nexthop' | 'tls' | 'auth'>): string {
  if (r.nexthop.startsWith('lmtp+unix:')) return r.nexthop;
  const u = new URL(r.nexthop);
  if (r.auth) {
    u.username = encodeURIComponent(r.auth.username);
    u.password = encodeURIComponent(r.auth.password);
  }
  if (r.tls) u.searchParams.set('tls', r.tls);
  return u.toString().replace(/\/(\?|$)/, '$1');
}

/** A next hop URL fit for a log line: the password (and user) replaced. */
export function withoutCredentials(nexthop: string): string {
  return nexthop.replace(/^([a-z+]+:\/\/)[^@/]*@/i, '$1***@');
}

export function toRouteConfig(r: StoredRoute): RouteConfig {
  return { nexthop: transportNexthop(r), mode: r.mode, verify: r.verify, ...(r.forward_client ? { forward_client: r.forward_client } : {}) };
}

export function publicRoute(r: StoredRoute): PublicRoute {
  const { auth, ...rest } = r;
  return { ...rest, ...(auth ? { auth: { username: auth.username } } : {}) };
}

/** A short fingerprint of the password, so the ETag changes when only the password does. */
export const secretFingerprint = (r: StoredRoute) => (r.auth ? createHash('sha256').update(`postern-route:${r.auth.password}`).digest('hex').slice(0, 16) : null);

function parseStored(raw: string): StoredRoute {
  const r = JSON.parse(raw) as StoredRoute;
  if (typeof r.domain !== 'string' || routeKey(r.domain) === null || typeof r.nexthop !== 'string' || nexthopProblem(r.nexthop) !== null) throw new Error('not a route');
  return r;
}

/** Where the route table comes from: the config alone, or the config plus the store. */
export interface RouteSource {
  table(log?: Logger): Promise<RouteTable>;
  /** True while routes kept elsewhere (the store) have never been read: `table()` may lack some. */
  readonly unknown?: boolean;
}

export function staticRoutes(configured: Record<string, RouteConfig>): RouteSource {
  const t = new RouteTable(configured);
  return { table: () => Promise.resolve(t) };
}

/** The config's routes with the store's on top, read fresh for each lookup. */
export class LiveRoutes implements RouteSource {
  private readonly hash: PolicyHash<StoredRoute>;

  constructor(
    private readonly configured: Record<string, RouteConfig>,
    store: Store | undefined,
    key = RELAY_ROUTES_KEY,
  ) {
    this.hash = new PolicyHash(store, key, parseStored);
  }

  async table(log?: Logger): Promise<RouteTable> {
    const stored = await this.hash.entries(log);
    if (!stored.length) return new RouteTable(this.configured);
    // RouteTable keeps the last of equal keys: the store's entries come after the config's.
    const merged: [string, RouteConfig][] = [...Object.entries(this.configured), ...stored.map((r) => [r.domain, toRouteConfig(r)] as [string, RouteConfig])];
    return RouteTable.fromEntries(merged);
  }

  /** True while the store's routes have never been read: `table()` then holds the config's only. */
  get unknown(): boolean {
    return this.hash.unknown;
  }
}
