// Options of the relay-acl plugin (plugins: [ { relay-acl: { … } } ]). The global
// `relay.networks` always applies; these only add to it.
import { z } from 'zod';
import { parseRange } from '../../src/address/cidr.js';

/** "192.0.2.0/24", "2001:db8::/32", or a single address ("192.0.2.7", "::1"). */
export const cidr = z.string().refine((s) => validRange(s), { message: 'expected an IP address or CIDR range such as 10.0.0.0/8' });

export const configSchema = z
  .object({
    /** Extra trusted networks (clients that may relay anywhere), on top of relay.networks. */
    networks: z.array(cidr).default([]),
    /**
     * Store hash holding networks added at run time (REST `POST /v1/policies/relay/networks`):
     * field = id, value = CIDR. Read on each connection, so a change applies to the next one.
     * Empty string turns it off.
     */
    store_key: z.string().default('policy:relay:networks'),
    /**
     * Run-time policy from the REST API (src/policy/access.ts): domains we relay for, and the
     * sender and recipient access lists. Read on each transaction; empty string turns one off.
     */
    relay_domains_key: z.string().default('policy:relay:domains'),
    sender_access_key: z.string().default('policy:access:senders'),
    recipient_access_key: z.string().default('policy:access:recipients'),
  })
  .strict();

export type RelayAclConfig = z.infer<typeof configSchema>;

function validRange(s: string): boolean {
  try {
    parseRange(s);
    return true;
  } catch {
    return false;
  }
}
