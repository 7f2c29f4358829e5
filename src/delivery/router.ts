// Routing of one envelope recipient (RFC 5321 §5.1 for the MX part):
//   1. parse it (address.ts decides what the domain IS);
//   2. a local domain (`domains.local` or the directory's) → directory.expand: aliases,
//      catch-all and subaddresses (RFC 5233) become local users; alias targets outside our
//      domains become remote addresses; nothing found → unknown;
//   3. a remote address → `routes`: the exact domain first, then the nearest ".parent" wildcard
//      (".sub.example" matches every domain under sub.example, not sub.example itself, as in
//      Postfix transport maps); no route → delivery by MX lookup (done by the transport later).
//      While the store's routes have never been read (RouteSource.unknown: a node started in a
//      store outage), "no route" is not known: StoreUnavailableError instead, which the queue
//      takes as a temporary failure, so mail for a domain routed in the store is neither sent by
//      MX (to its public MX, perhaps this gateway) nor bounced.
// The router only decides; it writes nothing.
//
// The queue asks again at every delivery attempt of a remote recipient (`nextHops`), so a route
// added, changed or removed while mail waits applies to its next attempt.
//
// Config keys: `domains.local`, `routes` (plus the store's routes when `routes` is a LiveRoutes,
// src/policy/routes.ts: looked up afresh for each recipient, so an API change applies at once).
import type { Config } from '../config/load.js';
import type { RouteConfig } from './config.js';
import type { Directory } from '../directory/directory.js';
import { AddressError, parseAddress } from '../address/address.js';
import { staticRoutes, type RouteSource } from '../policy/routes.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { RouteTable } from './routes.js';

export type RemoteVia =
  | { type: 'route'; nexthop: string; mode: RouteConfig['mode']; verify: RouteConfig['verify']; match: string; forward_client?: 'none' | 'xclient' | 'xforward' | 'auto' }
  | { type: 'mx' };

export type RouteTarget =
  | { kind: 'local'; user: string; address: string; detail?: string }
  | { kind: 'remote'; address: string; domain: string; via: RemoteVia };

export type RoutingResult =
  | { status: 'ok'; targets: RouteTarget[] }
  /** A local domain without such a user, alias or catch-all (550 5.1.1). */
  | { status: 'unknown' }
  /** Not a valid address. */
  | { status: 'invalid'; reason: string };

export interface Router {
  route(address: string): Promise<RoutingResult>;
  /**
   * The routes as they are now, for several remote addresses (a queue round's due recipients)
   * from one read of the route table: each call answers as `remote` does, or throws
   * StoreUnavailableError for that address alone.
   */
  nextHops(): Promise<(address: string, domain: string) => RouteTarget & { kind: 'remote' }>;
}

export function createRouter(opts: { config: Pick<Config, 'domains' | 'routes'>; directory: Directory; routes?: RouteSource }): Router {
  const localDomains = new Set(opts.config.domains.local.map((d) => d.toLowerCase()));
  const source = opts.routes ?? staticRoutes(opts.config.routes);
  const isLocal = (domain: string) => localDomains.has(domain) || opts.directory.isLocalDomain(domain);

  const via = (routes: RouteTable, address: string, domain: string): RouteTarget & { kind: 'remote' } => {
    const m = routes.find(domain);
    if (m) return { kind: 'remote', address, domain, via: { type: 'route', ...m.route, match: m.key } };
    if (source.unknown) throw new StoreUnavailableError(`the routes in the store have never been read; ${domain} may have one`);
    return { kind: 'remote', address, domain, via: { type: 'mx' } };
  };

  const parse = (address: string) => {
    try {
      return parseAddress(address);
    } catch (e) {
      if (e instanceof AddressError) return null;
      throw e;
    }
  };

  return {
    async nextHops() {
      const routes = await source.table();
      return (address, domain) => via(routes, address, domain);
    },
    async route(address) {
      const p = parse(address);
      if (!p) return { status: 'invalid', reason: 'malformed address' };
      const routes = await source.table();
      if (!isLocal(p.domain)) return { status: 'ok', targets: [via(routes, p.address, p.domain)] };
      const x = await opts.directory.expand(p.address);
      if (!x || (x.local.length === 0 && x.remote.length === 0)) return { status: 'unknown' };
      const targets: RouteTarget[] = x.local.map((l) => ({ kind: 'local' as const, user: l.user, address: l.address, ...(l.detail ? { detail: l.detail } : {}) }));
      for (const r of x.remote) {
        const rp = parse(r);
        if (!rp) continue; // a broken alias target: the directory should not hold one; skip it
        // An alias target in one of our own domains that the directory left unexpanded is still
        // not ours to relay; treat it as unknown rather than loop it through the MX.
        if (isLocal(rp.domain)) continue;
        targets.push(via(routes, rp.address, rp.domain));
      }
      if (targets.length === 0) return { status: 'unknown' };
      return { status: 'ok', targets };
    },
  };
}
