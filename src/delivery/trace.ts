// Trace headers added at final delivery, and the bytes a mailbox receives.
//   Return-Path: <reverse-path>   RFC 5321 §4.4: the final delivery MTA records MAIL FROM here
//                                 ("<>" for the null sender, RFC 5321 §4.5.5).
//   Delivered-To: user@domain     the mailbox owner after alias expansion (Postfix/qmail
//                                 practice), for mail-loop detection later.
// The Received header is not added here: the listener adds it at receipt and it is already in
// the spooled bytes.
//
// Line endings: the spool keeps the message as received (CRLF on the wire, RFC 5322 §2.1).
// Mailboxes store LF line endings, as Dovecot, Postfix local(8) and mutt expect of Maildir and
// mbox: every CRLF becomes LF, a bare CR or LF is left as it is. So the delivered bytes are
// exactly  "Return-Path: <s>\n" + "Delivered-To: r\n" + crlfToLf(spooled message).
//
// Config keys: none.

/** Removes CR/LF so an address can never end a header early (header injection). */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

export function traceHeaders(sender: string, recipient: string): string {
  return `Return-Path: <${oneLine(sender)}>\nDelivered-To: ${oneLine(recipient)}\n`;
}

/** Every CRLF → LF; returns the input itself when there is none. */
export function crlfToLf(buf: Buffer): Buffer {
  // Through a latin1 string (one char per byte, so any bytes round-trip exactly): V8's native
  // replaceAll is about three times faster than a copy per line. (The I/O pool's thread has its own
  // copy for Maildir deliveries, io-pool.ts.)
  const text = buf.toString('latin1');
  if (!text.includes('\r\n')) return buf;
  const out = Buffer.allocUnsafe(buf.length);
  return out.subarray(0, out.write(text.replaceAll('\r\n', '\n'), 0, 'latin1'));
}

/** What a mailbox receives for one recipient: trace headers, then the message with LF endings. */
export function deliveredBytes(sender: string, recipient: string, message: Buffer): Buffer {
  return Buffer.concat([Buffer.from(traceHeaders(sender, recipient), 'utf8'), crlfToLf(message)]);
}
