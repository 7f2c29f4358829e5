// Config keys owned by the SMTP/LMTP listeners: `listen.*` (every listener, the protocol servers
// of later modules included, so the whole listener map lives in one place), `tls` and `smtp`.
import { z } from 'zod';
import { duration, size } from '../config/units.js';
import { cidr } from '../delivery/config.js';

const hostPort = (host: string, port: number) =>
  z
    .object({
      host: z.string().min(1).default(host),
      port: z.number().int().min(0).max(65535).default(port),
    })
    .strict();

/** Ports when no config file is given (CONTRACT.md): unprivileged, so `npm start` needs no root. */
export const DEFAULT_LISTEN = {
  smtp: { host: '0.0.0.0', port: 2525 },
  submission: { host: '0.0.0.0', port: 2587 },
  smtps: { host: '0.0.0.0', port: 2465 },
  lmtp: { host: '127.0.0.1', port: 2424 },
  imap: { host: '0.0.0.0', port: 2143 },
  imaps: { host: '0.0.0.0', port: 2993 },
  pop3: { host: '0.0.0.0', port: 2110 },
  pop3s: { host: '0.0.0.0', port: 2995 },
  managesieve: { host: '0.0.0.0', port: 4190 },
  api: { host: '127.0.0.1', port: 8025 },
} as const;

const trustedPeers = z.object({ trusted: z.array(cidr).min(1) }).strict();

/**
 * The SMTP-speaking listeners also take `proxy_protocol: { trusted }` (a PROXY v1/v2 header is
 * required from those peers and read for the client address; src/proxy/proxy-protocol.ts) and
 * `xclient: { trusted }` (XCLIENT and XFORWARD accepted from those peers).
 */
const smtpHostPort = (host: string, port: number) =>
  hostPort(host, port).extend({ proxy_protocol: trustedPeers.optional(), xclient: trustedPeers.optional() }).strict();
const SMTP_LISTENERS = new Set(['smtp', 'submission', 'smtps', 'lmtp']);

type ListenerName = keyof typeof DEFAULT_LISTEN;
type SmtpListenerKey = 'smtp' | 'submission' | 'smtps' | 'lmtp';
const listenerShape = Object.fromEntries(
  Object.entries(DEFAULT_LISTEN).map(([name, d]) => [name, (SMTP_LISTENERS.has(name) ? smtpHostPort(d.host, d.port) : hostPort(d.host, d.port)).optional()]),
) as { [K in Exclude<ListenerName, SmtpListenerKey>]: z.ZodOptional<ReturnType<typeof hostPort>> } & { [K in SmtpListenerKey]: z.ZodOptional<ReturnType<typeof smtpHostPort>> };

/** `listen`: omit a listener to turn it off. With no config file at all, every default is on. */
export const listenSchema = z.object(listenerShape).strict();

export const tlsSchema = z
  .object({
    cert: z.string().min(1),
    key: z.string().min(1),
  })
  .strict();

/** `smtp`: protocol limits and policies shared by the smtp, submission, smtps and lmtp listeners. */
export const smtpSchema = z
  .object({
    /** Advertised with SIZE and enforced on both the declared SIZE= and the real byte count. */
    max_message_size: size().prefault(25 * 1024 * 1024),
    max_recipients: z.number().int().positive().default(100),
    /** Longest line accepted, in commands and in DATA, CRLF excluded (RFC 5321 §4.5.3.1.6 asks for 1000 at least). */
    max_line_length: z.number().int().min(1000).default(4096),
    idle_timeout: duration().prefault('5m'),
    max_connections: z.number().int().positive().default(1000),
    /** Postfix's smtpd_client_connection_count_limit default; a client that reconnects at once
     * after QUIT briefly holds two slots, so this must sit well above its session count. */
    max_connections_per_ip: z.number().int().positive().default(50),
    /**
     * Bare LF or bare CR inside DATA (SMTP smuggling, RFC 5321 §2.3.8). `reject` refuses the
     * message with 550 5.6.11 (as Postfix's smtpd_forbid_bare_newline); `normalize` turns each
     * into CRLF. Either way only <CRLF>.<CRLF> ends DATA.
     */
    bare_newline: z.enum(['reject', 'normalize']).default('reject'),
    /**
     * Wait this long before the greeting; a client that talks first is refused with 554 5.5.1.
     * 0 still refuses a client whose first bytes arrive before the greeting was written.
     */
    greeting_delay: duration().prefault(0),
    /** Wrong-command limit before the connection is closed with 421. */
    max_bad_commands: z.number().int().positive().default(10),
  })
  .strict();

export type ListenConfig = z.infer<typeof listenSchema>;
export type SmtpConfig = z.infer<typeof smtpSchema>;
export type TlsConfig = z.infer<typeof tlsSchema>;
