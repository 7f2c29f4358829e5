// Our Received trace header (RFC 5321 §4.4) with the RFC 3848 / RFC 6531 §3.7.3 `with` keyword.
// Config keys: hostname (passed in).

export interface ReceivedInfo {
  helo?: string;
  clientHostname?: string;
  remoteAddress: string;
  hostname: string;
  protocol: string;
  id: string;
  /** Added as `for <addr>` only when there is exactly one recipient (RFC 5321 §4.4: privacy). */
  recipients: string[];
  tls?: { version?: string; cipher?: string };
  date?: Date;
}

/**
 * RFC 3848 §2 / RFC 6531 §3.7.3: SMTP, ESMTP, LMTP, plus S (TLS) and A (AUTH) suffixes, with the
 * UTF8 prefix when SMTPUTF8 was used.
 */
export function withKeyword(opts: { lmtp: boolean; ehlo: boolean; secure: boolean; auth: boolean; smtputf8: boolean }): string {
  let base: string;
  if (opts.lmtp) base = opts.smtputf8 ? 'UTF8LMTP' : 'LMTP';
  else if (opts.smtputf8) base = 'UTF8SMTP';
  else base = opts.ehlo ? 'ESMTP' : 'SMTP';
  return base + (opts.secure ? 'S' : '') + (opts.auth ? 'A' : '');
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 §3.3 date-time in UTC: "Tue, 1 Jul 2025 10:00:00 +0000". */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** Keeps only printable ASCII (a HELO name or PTR lands in a header). */
function clean(s: string): string {
  return s.replace(/[^\x21-\x7e]/g, '?').slice(0, 255);
}

/** The header field, folded, ending in CRLF. */
export function receivedHeader(r: ReceivedInfo): string {
  const ip = r.remoteAddress.includes(':') ? `IPv6:${r.remoteAddress}` : r.remoteAddress;
  const host = r.clientHostname && !r.clientHostname.startsWith('[') ? `${clean(r.clientHostname)} ` : '';
  const from = `from ${clean(r.helo || `[${ip}]`)} (${host}[${ip}])`;
  const tls = r.tls?.version ? `\r\n\t(using ${clean(r.tls.version)}${r.tls.cipher ? ` with cipher ${clean(r.tls.cipher)}` : ''})` : '';
  const forClause = r.recipients.length === 1 ? `\r\n\tfor <${r.recipients[0]}>` : '';
  return `Received: ${from}\r\n\tby ${clean(r.hostname)} (Postern) with ${r.protocol} id ${r.id}${tls}${forClause};\r\n\t${rfc5322Date(r.date ?? new Date())}\r\n`;
}
