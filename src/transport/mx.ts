// MX resolution for delivery by DNS (RFC 5321 §5.1): which hosts, in which order, at which
// addresses, a domain's mail goes to.
//   - MX records sorted by preference, lowest first; hosts of equal preference shuffled
//     (RFC 5321 §5.1: "randomize … among those of equal preference");
//   - each host's AAAA then A addresses (RFC 5321 §5.1 lets the client try every address);
//   - no MX records at all: the domain itself is the one host (implicit MX, RFC 5321 §5.1);
//   - a single MX record with the root as exchange ("0 .") is a null MX (RFC 7505 §3): the
//     domain accepts no mail, and the sender gets 556 5.1.10 at once (RFC 7505 §4.2);
//   - an MX or domain with no address is skipped; when nothing is left the domain is
//     permanently undeliverable (5.1.2, RFC 3463 "bad destination system address");
//   - a CNAME at the domain is followed once (RFC 5321 §5.1) when the name itself has no MX
//     and no address records of its own.
// DNS trouble (timeout, SERVFAIL) is temporary: the caller defers. Answers are cached for the
// smallest TTL among the address records used (node's MX answers carry no TTL), bounded by
// MIN_TTL and MAX_TTL; "nothing here" answers for NEGATIVE_TTL.
//
// Config keys: none (the resolver reads `dns.*`; the port comes from `outbound.mx_port`).
import type { Resolver, AddressRecord } from '../dns/resolver.js';

export interface MxHost {
  /** The exchange's name (TLS verification uses it), or the domain for an implicit MX. */
  name: string;
  preference: number;
  /** IPv6 first, then IPv4. Empty when the host has no address. */
  addresses: string[];
  implicit?: boolean;
}

export type MxResult =
  | { kind: 'hosts'; hosts: MxHost[] }
  /** RFC 7505: the domain says it takes no mail. */
  | { kind: 'null-mx' }
  /** Neither MX nor address records: no such mail domain. */
  | { kind: 'no-host'; reason: string };

const MIN_TTL = 5;
const MAX_TTL = 3600;
const NEGATIVE_TTL = 60;

export interface MxResolverOptions {
  /** Randomness for equal preferences (tests pin it). */
  random?: () => number;
  now?: () => number;
}

export class MxResolver {
  private readonly cache = new Map<string, { until: number; result: MxResult }>();
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(
    private readonly dns: Resolver,
    opts: MxResolverOptions = {},
  ) {
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
  }

  /**
   * The hosts for `domain`, in the order to try them (equal preferences shuffled per call, even
   * from the cache). Throws DnsError when the DNS cannot answer now (temporary).
   */
  async resolve(domain: string): Promise<MxResult> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const hit = this.cache.get(d);
    let result: MxResult;
    if (hit && hit.until > this.now()) {
      result = hit.result;
    } else {
      const { result: r, ttl } = await this.lookup(d, true);
      this.cache.set(d, { until: this.now() + ttl * 1000, result: r });
      result = r;
    }
    return result.kind === 'hosts' ? { kind: 'hosts', hosts: this.order(result.hosts) } : result;
  }

  private async lookup(domain: string, mayFollowCname: boolean): Promise<{ result: MxResult; ttl: number }> {
    const mx = await this.dns.resolveMx(domain);
    // RFC 7505 §3: exactly one MX with an empty exchange ("."), which node reports as ''.
    if (mx.some((m) => m.exchange === '' || m.exchange === '.')) {
      if (mx.length === 1) return { result: { kind: 'null-mx' }, ttl: NEGATIVE_TTL };
      // RFC 7505 §3: a null MX mixed with real ones is a misconfiguration; use the real ones.
    }
    const real = mx.filter((m) => m.exchange !== '' && m.exchange !== '.');
    if (real.length === 0) {
      // RFC 5321 §5.1: no MX → the domain is its own mail host (implicit MX).
      const addrs = await this.addresses(domain);
      if (addrs.list.length) {
        return { result: { kind: 'hosts', hosts: [{ name: domain, preference: 0, addresses: addrs.list, implicit: true }] }, ttl: addrs.ttl };
      }
      if (mayFollowCname && this.dns.resolveCname) {
        const cname = (await this.dns.resolveCname(domain))[0];
        if (cname) return this.lookup(cname.toLowerCase().replace(/\.$/, ''), false);
      }
      return { result: { kind: 'no-host', reason: `no MX or address records for ${domain}` }, ttl: NEGATIVE_TTL };
    }
    let ttl = MAX_TTL;
    const hosts: MxHost[] = [];
    // Lookups of the hosts run together: a domain rarely has more than a few.
    const resolved = await Promise.all(
      real.map(async (m) => {
        const name = m.exchange.toLowerCase().replace(/\.$/, '');
        return { name, preference: m.priority, addrs: await this.addresses(name) };
      }),
    );
    for (const r of resolved) {
      if (r.addrs.list.length) ttl = Math.min(ttl, r.addrs.ttl);
      hosts.push({ name: r.name, preference: r.preference, addresses: r.addrs.list });
    }
    if (!hosts.some((h) => h.addresses.length)) {
      return { result: { kind: 'no-host', reason: `no address for any MX host of ${domain}` }, ttl: NEGATIVE_TTL };
    }
    hosts.sort((a, b) => a.preference - b.preference);
    return { result: { kind: 'hosts', hosts }, ttl: Math.max(MIN_TTL, ttl) };
  }

  /** AAAA then A addresses of a host (route next hops by name). */
  async hostAddresses(name: string): Promise<string[]> {
    return (await this.addresses(name.toLowerCase().replace(/\.$/, ''))).list;
  }

  private async addresses(name: string): Promise<{ list: string[]; ttl: number }> {
    // A literal address as an MX name is a misconfiguration, but harmless to honour.
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return { list: [name], ttl: MAX_TTL };
    const [v6, v4] = await Promise.all([this.withTtl(name, 6), this.withTtl(name, 4)]);
    const all = [...v6, ...v4];
    const ttl = all.length ? Math.min(...all.map((a) => a.ttl)) : NEGATIVE_TTL;
    return { list: all.map((a) => a.address), ttl: Math.min(MAX_TTL, Math.max(MIN_TTL, ttl)) };
  }

  private async withTtl(name: string, family: 4 | 6): Promise<AddressRecord[]> {
    const fn = family === 4 ? this.dns.resolve4Ttl : this.dns.resolve6Ttl;
    if (fn) return fn.call(this.dns, name);
    const list = await (family === 4 ? this.dns.resolve4(name) : this.dns.resolve6(name));
    return list.map((address) => ({ address, ttl: 60 }));
  }

  /** Equal preferences in random order (Fisher–Yates within each run of equal preference). */
  private order(hosts: MxHost[]): MxHost[] {
    const out: MxHost[] = [];
    let i = 0;
    while (i < hosts.length) {
      let j = i;
      while (j < hosts.length && hosts[j]!.preference === hosts[i]!.preference) j++;
      const run = hosts.slice(i, j);
      for (let k = run.length - 1; k > 0; k--) {
        const r = Math.floor(this.random() * (k + 1));
        [run[k], run[r]] = [run[r]!, run[k]!];
      }
      out.push(...run);
      i = j;
    }
    return out;
  }

  clear(): void {
    this.cache.clear();
  }
}
