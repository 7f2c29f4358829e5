// Options of the rate-limit plugin (plugins: [ { rate-limit: { limits: [ { key: client_ip,
// max: 100, window: 1h } ] } } ]).
import { z } from 'zod';
import { duration } from '../../src/config/units.js';
import { cidr } from '../relay-acl/config.js';

export const limitSchema = z
  .object({
    /**
     * What is counted and per what: client_ip, auth_user, sender_domain (messages, at MAIL) or
     * recipient (messages to one recipient address, at RCPT).
     */
    key: z.enum(['client_ip', 'auth_user', 'sender_domain', 'recipient']),
    max: z.number().int().positive(),
    window: duration(),
    /** 451 (this transaction, the connection stays) or 421 (the connection is closed too). */
    reply: z.union([z.literal(451), z.literal(421)]).default(451),
  })
  .strict()
  .superRefine((l, ctx) => {
    if (l.window < 1000) ctx.addIssue({ code: 'custom', message: 'window must be at least 1s', path: ['window'] });
  });

export const configSchema = z
  .object({
    /** May be empty: policies can also come from the store (REST /v1/policies/relay/rate-limits). */
    limits: z.array(limitSchema).default([]),
    /**
     * Store hash of policies added at run time (src/policy/rate-limits.ts), read at every MAIL
     * and RCPT so a change applies to the next transaction; empty string turns it off.
     */
    store_key: z.string().default('policy:ratelimit:policies'),
    /** Clients never limited. Trusted networks and authenticated users are limited (auth_user is for them). */
    exempt_clients: z.array(cidr).default([]),
    /** client_ip counts per network of these prefix lengths: /32 is one IPv4 address, /64 one IPv6 site. */
    ipv4_prefix: z.number().int().min(8).max(32).default(32),
    ipv6_prefix: z.number().int().min(16).max(128).default(64),
    enhanced: z
      .string()
      .regex(/^4\.7\.\d{1,3}$/, 'expected a 4.7.x enhanced status code')
      .default('4.7.0'),
    /** `{key}` (e.g. "client_ip 192.0.2.1"), `{max}` and `{window}` are filled in. */
    text: z
      .string()
      .min(1)
      .refine((s) => !/[\r\n]/.test(s), 'must be one line')
      .default('Rate limit exceeded ({key}), try again later'),
  })
  .strict();

export type RateLimitConfig = z.infer<typeof configSchema>;
export type Limit = z.infer<typeof limitSchema>;
