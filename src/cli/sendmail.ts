// `postern sendmail [-t] [-f ADDR] [-i|-oi] [-F NAME] [RCPT...] < message`: local submission,
// like sendmail(8). The message is read from stdin (LF or CRLF line ends; without -i a line that
// is just "." ends it), completed with the header fields RFC 5322 §3.6 requires when missing
// (From, Date, Message-ID) and our Received field (RFC 5321 §4.4), then written durably into the
// maildrop (queue/maildrop.ts). Exit 0 means it is on disk: a running daemon picks it up at once,
// a stopped one at its next start. Local submission is trusted, as with sendmail(8): no relay
// check.
//   -t       recipients from To, Cc and Bcc (added to the RCPT arguments); Bcc is removed
//   -f ADDR  envelope sender (default: the login name @ the first local domain, or hostname)
//   -F NAME  full name for a From field we add
//   -i, -oi  a lone "." line is data
// Other sendmail options that are harmless (-oem, -odb, -odi, -v) are accepted and ignored.
//
// Config keys read: `data_dir`, `hostname`, `domains.local`.
import { userInfo } from 'node:os';
import { loadConfig } from '../config/load.js';
import { newQueueId } from '../queue/queue-id.js';
import { dropMessage } from '../queue/maildrop.js';
import { rfc5322Date } from '../smtp/received.js';
import { needsSmtputf8 } from '../address/address.js';
import type { Envelope } from '../queue/envelope.js';
import { EXIT, say, usageError, type CliIo } from './io.js';
import { encodeHeaderValue } from '../sieve/mime-write.js';

export const SENDMAIL_USAGE = `Usage: postern sendmail [-t] [-f ADDR] [-i] [-F NAME] [--config FILE] [RCPT...] < message

Queues the message on stdin for delivery (to the maildrop under data_dir; the daemon picks it
up now or when it next starts). Exit 0 once the message is on disk.

  -t          take recipients from To, Cc, Bcc (Bcc is removed)
  -f ADDR     envelope sender (default: your login name at the first local domain)
  -F NAME     full name for the From field when the message has none
  -i, -oi     do not treat a line with only "." as the end of the message
  -c, --config FILE   config file`;

interface Opts {
  t: boolean;
  i: boolean;
  from?: string;
  fullName?: string;
  config?: string;
  rcpts: string[];
}

function parse(argv: string[]): Opts | string {
  const o: Opts = { t: false, i: false, rcpts: [] };
  for (let k = 0; k < argv.length; k++) {
    const a = argv[k]!;
    const value = (flag: string) => (a.length > flag.length ? a.slice(flag.length) : argv[++k]);
    if (a === '--') {
      o.rcpts.push(...argv.slice(k + 1));
      break;
    }
    if (a === '-t') o.t = true;
    else if (a === '-i' || a === '-oi') o.i = true;
    else if (a.startsWith('-f')) o.from = value('-f');
    else if (a.startsWith('-F')) o.fullName = value('-F');
    else if (a === '-c' || a === '--config') o.config = argv[++k];
    else if (a.startsWith('--config=')) o.config = a.slice('--config='.length);
    else if (['-oem', '-odb', '-odi', '-v', '-bm', '-oee', '-om'].includes(a)) continue;
    else if (a.startsWith('-')) return `unknown option ${a}`;
    else o.rcpts.push(a);
  }
  if (o.from === undefined && argv.includes('-f')) return '-f needs an address';
  return o;
}

/** Splits "a@b, Name <c@d>, (x) e@f" into addresses (groups and comments handled simply). */
export function addressesIn(value: string): string[] {
  const out: string[] = [];
  const noComments = value.replace(/\([^()]*\)/g, ' ').replace(/"[^"]*"/g, '""');
  for (const raw of noComments.replace(/;/g, ',').split(',')) {
    // RFC 5322 §3.4 group syntax: "name: a@x, b@y;" — drop the display name of the group.
    const part = raw.replace(/^[^@<>"]*:/, '');
    const angle = /<([^>]*)>/.exec(part);
    const a = (angle ? angle[1]! : part).trim();
    if (a && a.includes('@')) out.push(a);
  }
  return out;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

export async function runSendmail(argv: string[], io: CliIo): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h') {
    say(io.stdout, SENDMAIL_USAGE);
    return EXIT.ok;
  }
  const o = parse(argv);
  if (typeof o === 'string') return usageError(io, 'sendmail', o);
  const config = loadConfig(o.config, io.env);
  let text = (await readAll(io.stdin)).toString('latin1').replace(/\r?\n/g, '\r\n');
  if (!o.i) {
    // sendmail(8): without -i, a line consisting of a single dot ends the input.
    const m = /(^|\r\n)\.\r\n/.exec(text) ?? /(^|\r\n)\.$/.exec(text);
    if (m) text = text.slice(0, m.index + m[1]!.length);
  }
  if (text && !text.endsWith('\r\n')) text += '\r\n';
  let sep = text.indexOf('\r\n\r\n');
  // No blank line: all header if it looks like one, else all body.
  if (sep < 0) sep = /^[\x21-\x39\x3b-\x7e]+:/.test(text) ? text.length - 2 : -2;
  let header = sep >= 0 ? text.slice(0, sep + 2) : '';
  const body = sep >= 0 ? text.slice(sep + 4) : text;
  const fields = header.split(/\r\n(?![ \t])/).filter(Boolean);
  const get = (name: string) => fields.filter((f) => f.toLowerCase().startsWith(`${name.toLowerCase()}:`)).map((f) => f.slice(name.length + 1).replace(/\r\n[ \t]/g, ' '));

  const rcpts = [...o.rcpts];
  // The text is bytes as latin1 (one char per byte); a UTF-8 address (RFC 6532) is read as UTF-8.
  if (o.t) for (const n of ['To', 'Cc', 'Bcc']) for (const v of get(n)) rcpts.push(...addressesIn(Buffer.from(v, 'latin1').toString('utf8')));
  // RFC 5322 §3.6.3: Bcc is not passed on.
  header = fields.filter((f) => !/^bcc:/i.test(f)).map((f) => `${f}\r\n`).join('');
  const unique = [...new Set(rcpts.map((r) => r.trim()).filter(Boolean))];
  if (unique.length === 0) {
    say(io.stderr, 'postern sendmail: no recipients');
    return EXIT.usage;
  }
  const login = (() => {
    try {
      return userInfo().username;
    } catch {
      return 'nobody';
    }
  })();
  const sender = o.from ?? `${login}@${config.domains.local[0] ?? config.hostname}`;
  const id = newQueueId();
  const now = new Date();
  const add: string[] = [];
  add.push(`Received: by ${config.hostname} (Postern, from userid ${process.getuid?.() ?? 0})\r\n\tid ${id}; ${rfc5322Date(now)}\r\n`);
  if (!get('From').length) add.push(`From: ${displayName(o.fullName)}<${sender}>\r\n`);
  if (!get('Date').length) add.push(`Date: ${rfc5322Date(now)}\r\n`);
  if (!get('Message-ID').length) add.push(`Message-ID: <${id}@${config.hostname}>\r\n`);
  const received = add.shift()!;
  // The input's own bytes as they came (latin1 round-trips them); what is added here (the sender,
  // a -F name) is text, written as UTF-8.
  const message = Buffer.concat([Buffer.from(received, 'utf8'), Buffer.from(header, 'latin1'), Buffer.from(add.join(''), 'utf8'), Buffer.from(`\r\n${body}`, 'latin1')]);
  const envelope: Envelope = {
    mailFrom: sender === '<>' ? '' : sender,
    recipients: unique.map((address) => ({ address })),
    ...(/[\x80-\xff]/.test(body) ? { body: '8BITMIME' as const } : {}),
    // RFC 6531: a UTF-8 address in the envelope needs SMTPUTF8 onwards. 8-bit header text alone
    // does not (a next hop without SMTPUTF8 still takes it, as mail over SMTP without the flag).
    ...([sender, ...unique].some(needsSmtputf8) ? { smtputf8: true } : {}),
    source: { listener: 'local', remoteAddress: '127.0.0.1', protocol: 'local', authUser: login },
    receivedAt: now.getTime(),
  };
  await dropMessage(config.data_dir, id, envelope, message);
  return EXIT.ok;
}

/** `-F NAME` as the From phrase: quoted when ASCII, else an RFC 2047 encoded word. */
function displayName(name: string | undefined): string {
  const clean = name?.replace(/["\\\r\n]/g, '');
  if (!clean) return '';
  return /^[\x20-\x7e]*$/.test(clean) ? `"${clean}" ` : `${encodeHeaderValue(clean)} `;
}
