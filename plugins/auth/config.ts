// Options of the auth plugin (plugins: [ { auth: { … } } ]). Durations accept "15m", "1s", "250ms".
import { z } from 'zod';
import { duration } from '../../src/config/units.js';

export const configSchema = z
  .object({
    /** Failures of one username within `window` before that username is locked. */
    max_failures: z.number().int().positive().default(5),
    /** Failures from one client (IPv4 address, IPv6 /64) within `window` before it is locked. Higher: NAT. */
    max_failures_per_ip: z.number().int().positive().default(20),
    window: duration().prefault('15m'),
    /** How long a lock lasts. */
    lockout: duration().prefault('15m'),
    /** Added to the reply time per failure counted so far (tarpit), up to `max_delay`. */
    delay: duration().prefault('1s'),
    /** Cap on the delay; keep it well under the hook `timeout` (default 10s). */
    max_delay: duration().prefault('5s'),
  })
  .strict()
  .refine((c) => c.delay <= c.max_delay, { message: 'delay must not exceed max_delay', path: ['delay'] });

export type AuthConfig = z.infer<typeof configSchema>;
