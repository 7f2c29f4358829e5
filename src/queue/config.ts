// Config keys owned by the outbound queue: `outbound`.
import { z } from 'zod';
import { duration } from '../config/units.js';

export const outboundSchema = z
  .object({
    /** Port used for MX delivery (tests point it elsewhere). */
    mx_port: z.number().int().min(1).max(65535).default(25),
    /** Waits between attempts; the last one repeats. */
    retry: z.array(duration()).min(1).prefault(['5m', '10m', '20m', '40m', '1h']),
    lifetime: duration().prefault('5d'),
    delay_warning: duration().prefault('4h'),
    concurrency: z
      .object({
        total: z.number().int().positive().default(100),
        per_domain: z.number().int().positive().default(10),
      })
      .strict()
      .prefault({}),
    tls: z.enum(['none', 'opportunistic', 'required', 'verify']).default('opportunistic'),
    /** Connection reuse (transport/pool.ts): several messages to one host over one session. */
    reuse: z
      .object({
        /** Transactions per connection, then QUIT; 1 turns reuse off. */
        max_messages: z.number().int().positive().default(100),
        /** An unused connection is closed after this long. */
        idle_timeout: duration().prefault('5s'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type OutboundConfig = z.infer<typeof outboundSchema>;
