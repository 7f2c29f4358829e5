// The whole config file as one zod schema, composed from each module's own `*Schema`. Every
// object is strict, so an unknown key is an error with its key path. Defaults are the embedded,
// single-node mode (CONTRACT.md); `z.infer` gives the types the rest of the code uses.
import { z } from 'zod';
import { apiSchema } from '../api/config.js';
import { domainsSchema, mailboxSchema, relaySchema, routesSchema } from '../delivery/config.js';
import { dnsSchema } from '../dns/config.js';
import { pluginsSchema } from '../pipeline/config.js';
import { outboundSchema } from '../queue/config.js';
import { sieveSchema } from '../sieve/config.js';
import { listenSchema, smtpSchema, tlsSchema } from '../smtp/config.js';
import { storeSchema } from '../store/config.js';
import { logSchema } from '../log/config.js';

export const configSchema = z
  .object({
    hostname: z.string().min(1).optional(),
    /** Spool, state and mailboxes. A relative path resolves against the config file's folder. */
    data_dir: z.string().min(1).default('./data'),
    listen: listenSchema.optional(),
    tls: tlsSchema.optional(),
    smtp: smtpSchema.prefault({}),
    domains: domainsSchema.prefault({}),
    routes: routesSchema,
    relay: relaySchema.prefault({}),
    mailbox: mailboxSchema.prefault({}),
    dns: dnsSchema.prefault({}),
    outbound: outboundSchema.prefault({}),
    store: storeSchema.prefault({ driver: 'embedded' }),
    api: apiSchema.prefault({}),
    sieve: sieveSchema.prefault({}),
    log: logSchema.prefault({}),
    plugins: pluginsSchema,
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.infer<typeof configSchema>;
