// ETRN (RFC 1985): a client asks the server to run its queue for a domain now, typically a site
// that connects now and then to collect its mail (the mail then goes out by the normal route:
// MX or `routes`, not back over this connection).
//
//   ETRN domain     run the queue for that domain
//   ETRN @domain    the same for the domain and all its subdomains (RFC 1985 §3: "@" asks for
//                   the subdomains; the domain itself is included, as a site asking for its
//                   tree expects)
//   ETRN #queue     queue names are not supported → 459
// Replies (RFC 1985 §5.3): 250 queuing started (with the number of messages), 251 no messages
// waiting, 458 unable to queue (the queue failed), 459 node not allowed (a local domain, a queue
// name), 500 no argument, 501 bad domain syntax. Only on the `smtp` listener (where it is
// advertised in EHLO), only after HELO/EHLO and outside a mail transaction (503), and only for
// trusted clients (`relay.networks`; anyone else gets 554 5.7.1): running the queue costs work,
// so a stranger must not be able to trigger it.
//
// Config keys: `relay.networks`, `domains.local` (read by the listener that builds this).
import { inRanges, parseRange, type Range } from '../address/cidr.js';
import { Replies, SmtpReply } from './replies.js';

/** What ETRN needs of the queue: run deferred mail for a domain now; the number of messages. */
export interface EtrnQueue {
  runQueue(domain: string, opts: { subdomains: boolean }): Promise<number>;
}

export interface EtrnRequest {
  /** The command line as received. */
  line: string;
  remoteAddress: string;
  /** HELO/EHLO was given. */
  greeted: boolean;
  /** MAIL was given and the transaction is not over. */
  inTransaction: boolean;
}

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DOMAIN_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);

export type EtrnArgument = { kind: 'domain'; domain: string; subdomains: boolean } | { kind: 'queue'; name: string };

/** The argument of an ETRN line, or the syntax reply (500 / 501). */
export function parseEtrn(line: string): EtrnArgument | SmtpReply {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2 || !parts[1]) return Replies.etrnSyntax();
  if (parts.length > 2) return Replies.etrnBadDomain();
  const arg = parts[1];
  if (arg.startsWith('#')) {
    const name = arg.slice(1);
    return DOMAIN_RE.test(name) ? { kind: 'queue', name } : Replies.etrnBadDomain();
  }
  const subdomains = arg.startsWith('@');
  const domain = (subdomains ? arg.slice(1) : arg).replace(/\.$/, '').toLowerCase();
  if (!domain || domain.length > 253 || !DOMAIN_RE.test(domain)) return Replies.etrnBadDomain();
  return { kind: 'domain', domain, subdomains };
}

export class EtrnService {
  private readonly trusted: Range[];
  private readonly local: Set<string>;

  constructor(
    opts: { networks: string[]; localDomains: string[] },
    private readonly queue: EtrnQueue,
  ) {
    // relay.networks is validated by the config schema, so every entry parses.
    this.trusted = opts.networks.map(parseRange);
    this.local = new Set(opts.localDomains.map((d) => d.toLowerCase()));
  }

  /** The reply for one ETRN command. Never throws. */
  async handle(req: EtrnRequest): Promise<SmtpReply> {
    if (!req.greeted) return Replies.badSequence('Send HELO/EHLO first');
    if (req.inTransaction) return Replies.badSequence('Mail transaction in progress');
    if (!inRanges(req.remoteAddress, this.trusted)) return Replies.etrnDenied();
    const arg = parseEtrn(req.line);
    if (arg instanceof SmtpReply) return arg;
    if (arg.kind === 'queue') return Replies.etrnNodeNotAllowed(`#${arg.name}`, 'queue names are not supported');
    const node = `${arg.subdomains ? '@' : ''}${arg.domain}`;
    // Mail for a local domain is delivered here at once; there is no queue to run for it.
    if (this.local.has(arg.domain)) return Replies.etrnNodeNotAllowed(node, 'mail for it is delivered locally');
    let count: number;
    try {
      count = await this.queue.runQueue(arg.domain, { subdomains: arg.subdomains });
    } catch (e) {
      return Replies.etrnUnable(node, e);
    }
    return count > 0 ? Replies.etrnStarted(node, count) : Replies.etrnNoMessages(node);
  }
}
