// Options of the sieve plugin (plugins: [ { sieve: { scripts: [rules/global.sieve] } } ]).
import { z } from 'zod';

export const configSchema = z
  .object({
    /** Sieve files run in this order, relative to the config file's folder. */
    scripts: z.array(z.string().min(1)).default([]),
    /** Also run the admin rules kept in the store (written by the REST API), after the files, in their order (sieve/rule-order.ts). */
    store_rules: z.boolean().default(true),
  })
  .strict();

export type SieveGatewayConfig = z.infer<typeof configSchema>;
