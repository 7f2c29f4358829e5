// Options of the dnsbl plugin (plugins: [ { dnsbl: { zones: [...] } } ]).
import { z } from 'zod';
import { duration } from '../../src/config/units.js';
import { parseRange } from '../../src/address/cidr.js';

const zoneName = z
  .string()
  .regex(/^(?!-)[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/i, 'expected a DNS zone such as zen.example')
  .transform((z) => z.toLowerCase().replace(/\.$/, ''));

/** "127.0.0.2" or "127.0.0.0/24": which A answers mean "listed". */
const answer = z.string().refine(
  (s) => {
    try {
      return parseRange(s)[0].kind() === 'ipv4';
    } catch {
      return false;
    }
  },
  { message: 'expected an IPv4 address or range such as 127.0.0.2 or 127.0.0.0/24' },
);

export const zoneSchema = z.union([
  zoneName.transform((zone) => ({ zone, answers: undefined as string[] | undefined })),
  z.object({ zone: zoneName, answers: z.array(answer).min(1).optional() }).strict(),
]);

export const configSchema = z
  .object({
    /** May be empty: zones can also come from the store (REST /v1/dnsbl/zones, `store_key`). */
    zones: z.array(zoneSchema).default([]),
    /** Where the configured zones' check runs: at connect (cheapest), or at rcpt (so postmaster@ can still be reached by a later plugin). */
    stage: z.enum(['connect', 'rcpt']).default('connect'),
    /** Wait per zone; an unanswered zone counts as "not listed". Keep it under the hook `timeout`. */
    dns_timeout: duration().prefault('2s'),
    /** How long answers (listed and not listed) are remembered in the store. */
    cache_ttl: duration().prefault('5m'),
    reject_code: z.number().int().min(550).max(554).default(554),
    reject_enhanced: z
      .string()
      .regex(/^5\.\d{1,3}\.\d{1,3}$/, 'expected a 5.x.y enhanced status code')
      .default('5.7.1'),
    /** `{ip}` and `{zone}` are filled in. */
    reject_text: z
      .string()
      .min(1)
      .refine((s) => !/[\r\n]/.test(s), 'must be one line')
      .default('Service unavailable; client [{ip}] blocked using {zone}'),
    /**
     * Store hash of zones added at run time (src/policy/dnsbl.ts), read on every check so a
     * change applies to the next connection; empty string turns it off.
     */
    store_key: z.string().default('policy:dnsbl:zones'),
    /** Store zones with `action: score`: the sum of the listing zones' scores that refuses at RCPT. */
    score_threshold: z.number().positive().default(5),
  })
  .strict();

export type DnsblConfig = z.infer<typeof configSchema>;
