// CIDR matching for relay-acl, dnsbl answers and anyone who asks "is this address in these networks":
// IPv4, IPv6, and IPv4-mapped IPv6 (RFC 4291 §2.5.5.2, "::ffff:192.0.2.1") treated as the IPv4
// address it carries, in either direction (a mapped client against an IPv4 range, an IPv4 client
// against a "::ffff:0:0/96"-style range).
// Config keys read: none.
import ipaddr from 'ipaddr.js';

export type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Parses "a.b.c.d/n", "x::/n" or a bare address (a /32 or /128); throws on nonsense. */
export function parseRange(s: string): Range {
  const t = s.trim();
  let range: Range;
  if (t.includes('/')) range = ipaddr.parseCIDR(t);
  else {
    const a = ipaddr.parse(t);
    range = [a, a.kind() === 'ipv4' ? 32 : 128];
  }
  const [addr, bits] = range;
  // A range inside ::ffff:0:0/96 is an IPv4 range written in IPv6.
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return range;
}

/** The client address as ipaddr sees it, an IPv4-mapped IPv6 address turned into IPv4; null if unparsable. */
export function parseClient(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  try {
    return ipaddr.process(ip.trim());
  } catch {
    return null;
  }
}

export function inRanges(ip: string, ranges: readonly Range[]): boolean {
  const a = parseClient(ip);
  if (!a) return false;
  return ranges.some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits));
}

/**
 * The network a client belongs to, as "192.0.2.0/24" or "2001:db8:1:2::/64" (the address masked
 * to `v4` or `v6` bits; an IPv4-mapped IPv6 address counts as IPv4); null for a non-address.
 * Greylisting and rate limits count per network: one IPv6 host is given a whole /64 (RFC 6177),
 * and can send from any address in it.
 */
export function clientNetwork(ip: string, v4: number, v6: number): string | null {
  const a = parseClient(ip);
  if (!a) return null;
  const bits = a.kind() === 'ipv4' ? v4 : v6;
  const cidr = `${a.toString()}/${bits}`;
  const base = a.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
  return `${base.toString()}/${bits}`;
}
