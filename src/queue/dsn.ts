// Delivery status notifications (RFC 3464, carried as RFC 6522 multipart/report) and the rules
// for when to send one (RFC 3461 §4.1 NOTIFY, §6 relaying):
//   - failed recipients → one DSN per round, Action: failed;
//   - still deferred after `outbound.delay_warning` → one delay DSN, Action: delayed, with
//     Will-Retry-Until;
//   - NOTIFY=SUCCESS → Action: delivered (local mailbox) or relayed (the next hop does not offer
//     DSN, RFC 3461 §6.2.2); nothing when the next hop took the DSN request over;
//   - no NOTIFY → as if FAILURE,DELAY (RFC 3461 §4.1 leaves the default to the MTA);
//   - NOTIFY=NEVER → nothing.
// A DSN has the null reverse-path (RFC 5321 §4.5.5) and is `Auto-Submitted: auto-replied`
// (RFC 3834). Never a bounce for a bounce: a failed message with the null sender is reported once
// to postmaster@ the first local domain (a "double bounce"), and a failed double bounce is
// dropped with a log line.
// Parts: a human-readable text/plain; message/delivery-status (Reporting-MTA, Original-Envelope-Id,
// Arrival-Date, then per recipient Original-Recipient, Final-Recipient, Action, Status,
// Remote-MTA, Diagnostic-Code, Last-Attempt-Date); the original message as message/rfc822, or
// only its header as text/rfc822-headers when RET=HDRS (RFC 3461 §4.3).
//
// Config keys: `hostname`, `domains.local`, `outbound.delay_warning`, `outbound.lifetime`.
import { randomBytes } from 'node:crypto';
import { needsSmtputf8 } from '../address/address.js';
import { rfc5322Date } from '../smtp/received.js';
import type { DsnNotify, Envelope, EnvelopeRecipient } from './envelope.js';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  /** The address as the envelope had it (RFC 5321 RCPT TO). */
  rcpt: string;
  /** The address the delivery attempt used (after alias expansion). */
  final: string;
  /** ORCPT as received: "addr-type;xtext". */
  orcpt?: string;
  action: DsnAction;
  /** RFC 3463 code, e.g. 5.1.1. */
  status: string;
  /** "dns; mx.example" when a remote server answered. */
  remoteMta?: string;
  /** The reply as given: "550 5.1.1 No such user". */
  diagnostic?: string;
  lastAttempt?: number;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  envelope: Envelope;
  /** The original message as spooled (CRLF). */
  message: Buffer;
  recipients: DsnRecipient[];
  /** For Will-Retry-Until on delay notices. */
  retryUntil?: number;
  now?: Date;
}

/** Received header fields beyond which a message is taken to loop (RFC 5321 §6.3). */
export const MAX_RECEIVED = 50;

/** Which notice a recipient asked for (RFC 3461 §4.1); no NOTIFY means FAILURE and DELAY. */
export function wants(rcpt: EnvelopeRecipient | undefined, kind: Exclude<DsnNotify, 'NEVER'>): boolean {
  const n = rcpt?.notify;
  if (!n || n.length === 0) return kind === 'FAILURE' || kind === 'DELAY';
  return n.includes(kind);
}

/** RFC 3461 §4: xtext "+XX" hex escapes decoded. */
export function decodeXtext(s: string): string {
  return s.replace(/\+([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The header section of a message (up to and including the blank line), CRLF or LF. */
export function headerSection(message: Buffer): Buffer {
  const crlf = message.indexOf('\r\n\r\n');
  const lf = message.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return message.subarray(0, crlf + 4);
  if (lf >= 0) return message.subarray(0, lf + 2);
  return message;
}

/** Number of Received fields in the header section (loop detection). */
export function countReceived(message: Buffer): number {
  const h = headerSection(message).toString('latin1');
  return (h.match(/^Received:/gim) ?? []).length;
}

const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?');
/** An address on one line: controls go, but a UTF-8 address (RFC 6531) stays as it is. */
const addressLine = (s: string) => s.replace(/[\r\n]+/g, ' ').replace(/\p{Cc}/gu, '?');

/**
 * Whether the DSN for `envelope` about `recipients` must go out with SMTPUTF8 (RFC 6533 §4): it
 * names a UTF-8 address, or returns a message that was itself sent with SMTPUTF8.
 */
export function dsnNeedsSmtputf8(envelope: Envelope, recipients: Pick<DsnRecipient, 'final'>[]): boolean {
  return !!envelope.smtputf8 || needsSmtputf8(envelope.mailFrom) || recipients.some((r) => needsSmtputf8(r.final));
}

/** Builds the DSN message (CRLF line ends). */
export function buildDsn(input: DsnInput): Buffer {
  const now = input.now ?? new Date();
  const { envelope } = input;
  const boundary = `postern-dsn-${randomBytes(8).toString('hex')}`;
  const kinds = new Set(input.recipients.map((r) => r.action));
  const subject = kinds.has('failed')
    ? 'Undelivered Mail Returned to Sender'
    : kinds.has('delayed')
      ? 'Delayed Mail (still being retried)'
      : kinds.has('relayed')
        ? 'Delivery Status Notification (Relayed)'
        : 'Successful Mail Delivery Report';
  const to = envelope.mailFrom || `postmaster@${input.reportingMta}`;
  // RFC 6533: with a UTF-8 address, or an original sent with SMTPUTF8 (its header may be UTF-8),
  // the report is global: message/global-delivery-status, whose address fields may be `utf-8`
  // typed, and the original as message/global or message/global-headers. The DSN then goes out
  // with SMTPUTF8 (dsnNeedsSmtputf8), so its To: header and text carry addresses as they are.
  const global = dsnNeedsSmtputf8(envelope, input.recipients);

  const human: string[] = [`This is the mail system at host ${input.reportingMta}.`, ''];
  if (kinds.has('failed')) human.push("I'm sorry to have to inform you that your message could not", 'be delivered to one or more recipients. It is attached below.', '');
  if (kinds.has('delayed')) {
    human.push('Your message could not be delivered yet to one or more recipients.', 'It will be retried until it is too old.');
    if (input.retryUntil) human.push(`Delivery will be attempted until ${rfc5322Date(new Date(input.retryUntil))}.`);
    human.push('');
  }
  if (kinds.has('delivered') || kinds.has('relayed')) human.push('Your message was successfully delivered to the destination(s) listed below.', '');
  for (const r of input.recipients) {
    human.push(`<${addressLine(r.final)}>: ${r.action}${r.diagnostic ? `: ${oneLine(r.diagnostic)}` : ''}`);
  }

  // RFC 3464 §2.2: per-message fields.
  const status: string[] = [`Reporting-MTA: dns; ${oneLine(input.reportingMta)}`, `X-Postern-Queue-ID: ${input.queueId}`];
  if (envelope.envid) status.push(`Original-Envelope-Id: ${oneLine(envelope.envid)}`);
  status.push(`Arrival-Date: ${rfc5322Date(new Date(envelope.receivedAt))}`);
  // RFC 3464 §2.3: per-recipient fields, each group after a blank line.
  for (const r of input.recipients) {
    status.push('');
    if (r.orcpt) {
      const semi = r.orcpt.indexOf(';');
      status.push(`Original-Recipient: ${oneLine(r.orcpt.slice(0, semi))}; ${oneLine(decodeXtext(r.orcpt.slice(semi + 1)))}`);
    }
    status.push(!needsSmtputf8(r.final) ? `Final-Recipient: rfc822; ${oneLine(r.final)}` : `Final-Recipient: utf-8; ${addressLine(r.final)}`);
    status.push(`Action: ${r.action}`);
    status.push(`Status: ${r.status}`);
    if (r.remoteMta) status.push(`Remote-MTA: ${oneLine(r.remoteMta)}`);
    if (r.diagnostic) status.push(`Diagnostic-Code: smtp; ${oneLine(r.diagnostic)}`);
    if (r.lastAttempt) status.push(`Last-Attempt-Date: ${rfc5322Date(new Date(r.lastAttempt))}`);
    if (r.action === 'delayed' && input.retryUntil) status.push(`Will-Retry-Until: ${rfc5322Date(new Date(input.retryUntil))}`);
  }

  // RFC 3461 §4.3: RET=HDRS returns the header only; failures default to the full message.
  const hdrsOnly = envelope.ret === 'HDRS' || !kinds.has('failed');
  const original = hdrsOnly ? headerSection(input.message) : input.message;
  const eightBit = original.some((b) => b > 0x7f);

  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${oneLine(input.reportingMta)}>`,
    `To: <${addressLine(to)}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.queueId}.${randomBytes(4).toString('hex')}.dsn@${oneLine(input.reportingMta)}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=${global ? 'global-delivery-status' : 'delivery-status'};\r\n\tboundary="${boundary}"`,
    ...(eightBit || global ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    `Content-Type: text/plain; charset=${global ? 'utf-8' : 'us-ascii'}`,
    'Content-Description: Notification',
    ...(global ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    ...human,
    '',
    `--${boundary}`,
    global ? 'Content-Type: message/global-delivery-status' : 'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    ...(global ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    ...status,
    '',
    `--${boundary}`,
    `Content-Type: ${global ? (hdrsOnly ? 'message/global-headers' : 'message/global') : hdrsOnly ? 'text/rfc822-headers' : 'message/rfc822'}`,
    `Content-Description: ${hdrsOnly ? 'Undelivered Message Headers' : 'Undelivered Message'}`,
    ...(eightBit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    '',
  ].join('\r\n');
  const orig = toCrlf(original);
  const tail = `${orig.length && !orig.subarray(-2).equals(Buffer.from('\r\n')) ? '\r\n' : ''}\r\n--${boundary}--\r\n`;
  // Every non-address part of `head` is ASCII (oneLine), so UTF-8 changes only the addresses.
  return Buffer.concat([Buffer.from(head, 'utf8'), orig, Buffer.from(tail, 'latin1')]);
}

function toCrlf(b: Buffer): Buffer {
  // The spool keeps CRLF; a stray bare LF becomes CRLF so the DSN stays valid on the wire.
  const s = b.toString('latin1');
  return /(^|[^\r])\n/.test(s) ? Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'latin1') : b;
}
