// Config keys owned by the resolver: `dns`.
import { z } from 'zod';
import { duration } from '../config/units.js';

export const dnsSchema = z
  .object({
    /** "host" or "host:port" ("[::1]:53" for IPv6); empty = the system resolver. */
    servers: z.array(z.string().min(1)).default([]),
    timeout: duration().prefault('5s'),
    tries: z.number().int().positive().default(2),
  })
  .strict();

export type DnsConfig = z.infer<typeof dnsSchema>;
