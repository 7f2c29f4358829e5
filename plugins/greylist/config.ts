// Options of the greylist plugin (plugins: [ { greylist: { delay: 5m } } ]).
import { z } from 'zod';
import { duration } from '../../src/config/units.js';
import { cidr } from '../relay-acl/config.js';

/** "sender@example.org", "@example.org" or "example.org" (the whole domain). */
const senderPattern = z
  .string()
  .regex(/^([^@\s]+@)?@?[a-z0-9.-]+$/i, 'expected an address (a@example.org) or a domain (example.org, @example.org)')
  .transform((s) => s.toLowerCase());

export const configSchema = z
  .object({
    /** How long a new triplet must wait before a retry is accepted. */
    delay: duration().prefault('5m'),
    /** How long a new triplet waits for its retry; later, it starts over. */
    retry_window: duration().prefault('2d'),
    /** How long a triplet that passed stays accepted since it was last seen. */
    expiry: duration().prefault('35d'),
    /** After this many accepted deliveries from a client network, the whole network skips greylisting (0: never). */
    auto_allow_after: z.number().int().min(0).default(5),
    /** Client networks are compared by these prefixes (one sending farm retries from other hosts). */
    ipv4_prefix: z.number().int().min(8).max(32).default(24),
    ipv6_prefix: z.number().int().min(16).max(128).default(64),
    /** Never greylisted, besides trusted networks and authenticated users. */
    allow_clients: z.array(cidr).default([]),
    allow_senders: z.array(senderPattern).default([]),
    /** Recipients (addresses or domains) whose mail is never greylisted, e.g. postmaster@. */
    allow_recipients: z.array(senderPattern).default([]),
    text: z
      .string()
      .min(1)
      .refine((s) => !/[\r\n]/.test(s), 'must be one line')
      .default('Greylisted, please try again later'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.delay >= c.retry_window) ctx.addIssue({ code: 'custom', message: 'delay must be shorter than retry_window', path: ['delay'] });
  });

export type GreylistConfig = z.infer<typeof configSchema>;
