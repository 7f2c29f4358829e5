// Options of the auth-results plugin (plugins: [ auth-results ] or { auth-results: { … } }).
import { z } from 'zod';

export const configSchema = z
  .object({
    /** The authserv-id naming us in Authentication-Results (RFC 8601 §2.5); default: `hostname`. */
    authserv_id: z
      .string()
      .regex(/^[a-z0-9.-]+$/i, 'expected a host name such as mx.example.org')
      .optional(),
    /** What a DMARC failure of a domain publishing p=reject gets: refused (550 5.7.1), quarantined, or nothing (header only). */
    dmarc_reject: z.enum(['reject', 'quarantine', 'none']).default('reject'),
    /** What a DMARC failure of a domain publishing p=quarantine gets. */
    dmarc_quarantine: z.enum(['quarantine', 'none']).default('quarantine'),
    quarantine_folder: z.string().min(1).default('Junk'),
    /** Honour the record's pct= sampling (RFC 7489 §6.3); off: every failing message gets the policy. */
    honour_pct: z.boolean().default(true),
    /** Also check mail from authenticated users and trusted networks (default: no, they are ours). */
    check_relaying: z.boolean().default(false),
    /** Check ARC chains (RFC 8617) and report arc= in the header. */
    arc: z.boolean().default(true),
    /** Weakest RSA key accepted for DKIM (RFC 8301 §3.2: at least 1024). */
    min_rsa_bits: z.number().int().min(512).default(1024),
    /** Add Received-SPF (RFC 7208 §9.1) as well as Authentication-Results. */
    received_spf: z.boolean().default(true),
  })
  .strict();

export type AuthResultsConfig = z.infer<typeof configSchema>;
