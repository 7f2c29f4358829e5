// Run-time relay policy kept in the store, written by the REST API (/v1/policies/relay/…) and
// read by plugins/relay-acl on every transaction, so a change applies to the next one on every
// node. Keys:
//   policy:relay:networks     hash id → CIDR: trusted clients (may relay anywhere)
//   policy:relay:domains      hash domain → "1": domains we relay for (as a backup MX or front
//                             end); their mail is accepted from anyone and goes out by MX/routes
//   policy:access:senders     hash id → JSON AccessEntry: MAIL FROM / client checks
//   policy:access:recipients  hash id → JSON AccessEntry: RCPT TO / client checks
// An access entry matches by address (exact, case-insensitive), domain (that domain and its
// subdomains) or CIDR (the client's address). The first deny wins over any allow; an allow at
// RCPT accepts the recipient (relaying included), an allow at MAIL only skips later deny entries.
import { createHash } from 'node:crypto';
import { inRanges, parseRange } from '../address/cidr.js';

export const RELAY_NETWORKS_KEY = 'policy:relay:networks';
export const RELAY_DOMAINS_KEY = 'policy:relay:domains';
export const SENDER_ACCESS_KEY = 'policy:access:senders';
export const RECIPIENT_ACCESS_KEY = 'policy:access:recipients';
export const POLICY_CHANNEL = 'policy';

export type AccessMatch = 'address' | 'domain' | 'cidr';

export interface AccessEntry {
  id: string;
  match: AccessMatch;
  value: string;
  action: 'allow' | 'deny';
}

/** What kind of value this is, normalised; throws on a value that is none of them. */
export function classify(value: string): { match: AccessMatch; value: string } {
  const v = value.trim();
  if (v.includes('@')) {
    if (!/^[^@\s]+@[^@\s]+$/.test(v)) throw new Error(`${value} is not an address`);
    const at = v.lastIndexOf('@');
    return { match: 'address', value: `${v.slice(0, at).toLowerCase()}@${v.slice(at + 1).toLowerCase()}` };
  }
  try {
    const [addr, bits] = parseRange(v);
    return { match: 'cidr', value: `${addr.toString()}/${bits}` };
  } catch {
    /* not an address range */
  }
  const d = v.toLowerCase().replace(/\.$/, '');
  if (!/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/.test(d)) throw new Error(`${value} is not an address, a domain or a CIDR range`);
  return { match: 'domain', value: d };
}

export const accessId = (match: AccessMatch, value: string) => createHash('sha256').update(`${match}:${value}`).digest('hex').slice(0, 12);

export function parseEntries(all: Record<string, string>): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const raw of Object.values(all)) {
    try {
      out.push(JSON.parse(raw) as AccessEntry);
    } catch {
      /* a damaged entry matches nothing */
    }
  }
  return out;
}

const domainMatches = (domain: string, entry: string) => domain === entry || domain.endsWith(`.${entry}`);

/** The deciding action for an address (may be '' for the null sender) and client, or null. */
export function decide(entries: AccessEntry[], address: string, client: string): 'allow' | 'deny' | null {
  const a = address.toLowerCase();
  const domain = a.slice(a.lastIndexOf('@') + 1);
  let allowed = false;
  for (const e of entries) {
    let hit = false;
    if (e.match === 'address') hit = a !== '' && a === e.value;
    else if (e.match === 'domain') hit = a !== '' && domainMatches(domain, e.value);
    else {
      try {
        hit = inRanges(client, [parseRange(e.value)]);
      } catch {
        hit = false;
      }
    }
    if (!hit) continue;
    if (e.action === 'deny') return 'deny';
    allowed = true;
  }
  return allowed ? 'allow' : null;
}
