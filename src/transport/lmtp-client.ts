// LMTP client (RFC 2033) for the stores behind us (Dovecot, Cyrus): LHLO instead of EHLO, and
// after DATA one reply per accepted recipient (RFC 2033 §4.2), so each recipient is done, deferred
// or failed on its own. Over TCP (lmtp://host:port) or a unix socket (lmtp+unix:/path).
// The session itself is smtp-client.ts's: nodemailer's SMTPConnection in LMTP mode.
//
// Config keys: none.
import { sendSession, type ClientOptions, type Destination, type OutMessage, type SessionResult } from './smtp-client.js';

export function sendLmtp(dest: Omit<Destination, 'protocol'>, msg: OutMessage, opts: ClientOptions): Promise<SessionResult> {
  return sendSession({ ...dest, protocol: 'lmtp' }, msg, opts);
}
