// DNS for everything that asks (DNSBL, MX, rDNS): node's c-ares resolver pointed at `dns.servers`
// (host:port entries allowed, so tests use a loopback server), with per-query timeout and tries.
// NXDOMAIN and NODATA are answers, not failures: they resolve to an empty list.
import { Resolver as NodeResolver } from 'node:dns/promises';
import type { DnsConfig } from './config.js';

export interface MxRecord {
  exchange: string;
  priority: number;
}

export interface Resolver {
  /** A records; [] for NXDOMAIN/NODATA; throws DnsError on timeouts and server failures. */
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[]>;
  resolveMx(name: string): Promise<MxRecord[]>;
  reverse(ip: string): Promise<string[]>;
  /** A / AAAA with their TTLs in seconds (MX delivery caches with them). Optional for fakes. */
  resolve4Ttl?(name: string): Promise<AddressRecord[]>;
  resolve6Ttl?(name: string): Promise<AddressRecord[]>;
  /** CNAME targets of `name` ([] when it has none). */
  resolveCname?(name: string): Promise<string[]>;
}

export interface AddressRecord {
  address: string;
  ttl: number;
}

export class DnsError extends Error {
  constructor(
    readonly query: string,
    readonly code: string,
  ) {
    super(`DNS lookup of ${query} failed: ${code}`);
    this.name = 'DnsError';
  }
}

const NO_ANSWER = new Set(['ENOTFOUND', 'ENODATA', 'NOTFOUND', 'NODATA']);

export function createResolver(cfg: Pick<DnsConfig, 'servers' | 'timeout' | 'tries'>): Resolver {
  const r = new NodeResolver({ timeout: cfg.timeout, tries: cfg.tries });
  if (cfg.servers.length) r.setServers(cfg.servers);
  const wrap =
    <T>(fn: (name: string) => Promise<T[]>) =>
    async (name: string): Promise<T[]> => {
      try {
        return await fn(name);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
        if (NO_ANSWER.has(code)) return [];
        throw new DnsError(name, code);
      }
    };
  return {
    resolve4: wrap((n) => r.resolve4(n)),
    resolve6: wrap((n) => r.resolve6(n)),
    resolveTxt: wrap(async (n) => (await r.resolveTxt(n)).map((parts) => parts.join(''))),
    resolveMx: wrap((n) => r.resolveMx(n)),
    reverse: wrap((n) => r.reverse(n)),
    resolve4Ttl: wrap((n) => r.resolve4(n, { ttl: true })),
    resolve6Ttl: wrap((n) => r.resolve6(n, { ttl: true })),
    resolveCname: wrap((n) => r.resolveCname(n)),
  };
}
