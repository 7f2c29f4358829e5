// DNSBL zones added at run time through the REST API (/v1/dnsbl/zones), on top of the dnsbl
// plugin's configured `zones`. Kept in the store hash `policy:dnsbl:zones` (zone → JSON
// StoredZone) and read by plugins/dnsbl on every check, so a change applies to the next
// connection on every node, without a restart. A store zone with the name of a configured zone
// replaces it while it exists.
//
// What a zone does when it lists the client (RFC 5782):
//   reject-connect  refuse the connection (554 5.7.1, the plugin's reject_code/_enhanced/_text)
//   reject-rcpt     refuse every RCPT of the session instead (postmaster@ can be reached by a
//                   plugin before dnsbl in the chain)
//   score           add `score` to the client's DNSBL score; at RCPT, a score reaching the
//                   plugin's `score_threshold` refuses as reject-rcpt does (Postfix postscreen's
//                   weighted dnsbl_sites, in the gateway's own chain)
// `answers`: which A answers count as listed: addresses ("127.0.0.2"), CIDR ranges
// ("127.0.0.0/24") or inclusive ranges ("127.0.0.2-127.0.0.11"); absent, the plugin's default
// (any 127.0.0.0/8 answer except 127.0.0.1 and 127.255.255.0/24).
import ipaddr from 'ipaddr.js';
import { inRanges, parseRange } from '../address/cidr.js';
import { PolicyHash } from './store-hash.js';
import type { Store } from '../store/store.js';

export const DNSBL_ZONES_KEY = 'policy:dnsbl:zones';
export const DNSBL_ACTIONS = ['reject-connect', 'reject-rcpt', 'score'] as const;
export type DnsblAction = (typeof DNSBL_ACTIONS)[number];

export interface StoredZone {
  zone: string;
  answers?: string[];
  action: DnsblAction;
  /** Only with action score: what one listing adds (> 0). */
  score?: number;
  updated_at: string;
}

const LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const ZONE = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})+$`);

/** The normalised zone name, or null when `s` is not a DNS zone with at least two labels. */
export function zoneName(s: string): string | null {
  const z = s.trim().toLowerCase().replace(/\.$/, '');
  return ZONE.test(z) ? z : null;
}

const ipv4ToNumber = (ip: string) => ipaddr.IPv4.parse(ip).toByteArray().reduce((n, b) => n * 256 + b, 0);

/**
 * A matcher for one `answers` item; throws when it is neither an IPv4 address, an IPv4 CIDR range
 * nor an inclusive "from-to" range of IPv4 addresses (from ≤ to).
 */
export function answerMatcher(spec: string): (answer: string) => boolean {
  const s = spec.trim();
  const dash = s.indexOf('-');
  if (dash >= 0) {
    const [from, to] = [s.slice(0, dash).trim(), s.slice(dash + 1).trim()];
    if (!ipaddr.IPv4.isValidFourPartDecimal(from) || !ipaddr.IPv4.isValidFourPartDecimal(to)) throw new Error(`${spec}: expected a range such as 127.0.0.2-127.0.0.11`);
    const [lo, hi] = [ipv4ToNumber(from), ipv4ToNumber(to)];
    if (lo > hi) throw new Error(`${spec}: the range ends before it starts`);
    return (a) => ipaddr.IPv4.isValidFourPartDecimal(a) && ipv4ToNumber(a) >= lo && ipv4ToNumber(a) <= hi;
  }
  const [addr, bits] = parseRange(s);
  if (addr.kind() !== 'ipv4') throw new Error(`${spec}: DNSBL answers are IPv4 addresses`);
  return (a) => ipaddr.IPv4.isValidFourPartDecimal(a) && inRanges(a, [[addr, bits]]);
}

export function validAnswer(spec: string): boolean {
  try {
    answerMatcher(spec);
    return true;
  } catch {
    return false;
  }
}

function parseStored(raw: string): StoredZone {
  const z = JSON.parse(raw) as StoredZone;
  const ok =
    typeof z.zone === 'string' &&
    zoneName(z.zone) === z.zone &&
    (DNSBL_ACTIONS as readonly string[]).includes(z.action) &&
    (z.answers === undefined || (Array.isArray(z.answers) && z.answers.every((a) => typeof a === 'string' && validAnswer(a)))) &&
    (z.action !== 'score' || (typeof z.score === 'number' && z.score > 0));
  if (!ok) throw new Error('not a DNSBL zone');
  return z;
}

export const dnsblZones = (store: Store | undefined, key = DNSBL_ZONES_KEY) => new PolicyHash(store, key, parseStored);
