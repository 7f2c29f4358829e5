// Config keys owned by routing and local delivery: `domains`, `routes`, `relay`, `mailbox`.
import { z } from 'zod';
import { parseRange } from '../address/cidr.js';
import { duration } from '../config/units.js';

const domainName = z
  .string()
  .min(1)
  .transform((d) => d.toLowerCase().replace(/\.$/, ''));

export const domainsSchema = z
  .object({
    /** Mailboxes live here; mail for these domains is delivered locally. */
    local: z.array(domainName).default([]),
  })
  .strict();

const nexthop = z.string().regex(/^(smtp|smtps|lmtp):\/\/.+|^lmtp\+unix:.+/, 'expected smtp://host:port, smtps://host:port, lmtp://host:port or lmtp+unix:/path');

/**
 * `verify: callout` settings (src/proxy/verify.ts): how long answers are cached in the store
 * (shared by every node), how long a probe may wait per reply, and what a client hears when the
 * next hop cannot be asked (`tempfail`: 451 4.4.3; `accept`: accept and queue as usual).
 */
export const calloutSchema = z
  .object({
    positive_ttl: duration().prefault('1h'),
    negative_ttl: duration().prefault('10m'),
    timeout: duration().prefault('30s'),
    on_unreachable: z.enum(['tempfail', 'accept']).default('tempfail'),
  })
  .strict();

export const routeSchema = z.union([
  nexthop.transform((n) => ({ nexthop: n, mode: 'queue' as const, verify: 'none' as const })),
  z
    .object({
      nexthop,
      mode: z.enum(['queue', 'proxy']).default('queue'),
      verify: z.enum(['none', 'callout', 'list']).default('none'),
      /** Absent: the defaults of calloutSchema. */
      callout: calloutSchema.optional(),
      /**
       * Tell the next hop who the client was (src/transport/forward-client.ts), when it offers
       * the command: `xclient`, `xforward`, `auto` (XCLIENT, else XFORWARD) or `none`.
       * Absent: `xclient` for `mode: proxy`, `none` for `mode: queue`.
       */
      forward_client: z.enum(['none', 'xclient', 'xforward', 'auto']).optional(),
    })
    .strict(),
]);

/** `routes`: domain (exact, or `.sub.example` for every subdomain) → next hop. */
export const routesSchema = z.record(z.string().min(1), routeSchema).default({});

/** "192.0.2.0/24", "2001:db8::/32" or a bare address. */
export const cidr = z.string().refine(
  (s) => {
    try {
      parseRange(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected an address or CIDR network such as 192.0.2.0/24 or 2001:db8::/32' },
);

export const relaySchema = z
  .object({
    /** Clients in these networks may relay anywhere; authenticated users may too. */
    networks: z.array(cidr).default(['127.0.0.0/8', '::1/128']),
  })
  .strict();

export const mailboxSchema = z
  .object({
    format: z.enum(['maildir', 'mbox']).default('maildir'),
    /** INBOX of user local@domain; `{data_dir}`, `{domain}`, `{local}` and `{user}` are filled in. */
    path: z.string().min(1).default('{data_dir}/mail/{domain}/{local}'),
    /**
     * Folder names on disk: IMAP's modified UTF-7, as Dovecot and Courier write Maildir++
     * folders, or UTF-8 (Dovecot's `UTF-8` mail_location option). ASCII names without '&' are
     * the same in both.
     */
    folder_names: z.enum(['utf7', 'utf8']).default('utf7'),
  })
  .strict();

export type DomainsConfig = z.infer<typeof domainsSchema>;
export type RoutesConfig = z.infer<typeof routesSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
export type CalloutConfig = z.infer<typeof calloutSchema>;
export type RelayConfig = z.infer<typeof relaySchema>;
export type MailboxConfig = z.infer<typeof mailboxSchema>;
