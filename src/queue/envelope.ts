// The envelope of one message as the spool keeps it: RFC 5321 MAIL FROM and RCPT TO with their
// parameters (RFC 3461 DSN, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8), plus where it came from.
import type { ForwardedClientInfo } from '../pipeline/origin.js';

/** RFC 3461 §4.1 NOTIFY values; `NEVER` stands alone. */
export type DsnNotify = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface EnvelopeRecipient {
  /** The address as given in RCPT TO, without angle brackets. */
  address: string;
  /** RFC 3461 §4.1 NOTIFY, when given. */
  notify?: DsnNotify[];
  /** RFC 3461 §4.2 ORCPT, as "addr-type;xtext-address", when given. */
  orcpt?: string;
  /** Folder a plugin or rule asked for (quarantine, fileinto); INBOX when absent. */
  folder?: string;
  /**
   * Several folders (Sieve fileinto :copy, or fileinto twice): one copy into each; "INBOX" is
   * the mailbox itself. When present it replaces `folder`.
   */
  folders?: string[];
}

export interface Envelope {
  /** Reverse-path without angle brackets; '' is the null sender (<>). */
  mailFrom: string;
  recipients: EnvelopeRecipient[];
  /** RFC 3461 §4.3 RET. */
  ret?: 'FULL' | 'HDRS';
  /** RFC 3461 §4.4 ENVID (xtext-decoded). */
  envid?: string;
  /** BODY=8BITMIME / 7BIT (RFC 6152). */
  body?: '7BIT' | '8BITMIME';
  /** SMTPUTF8 was given (RFC 6531). */
  smtputf8?: boolean;
  /**
   * Set on notices we generate (dsn.ts): 1 a DSN to the sender, 2 a double bounce to the
   * postmaster. A failed 2 is dropped, never reported again.
   */
  dsn?: 1 | 2;
  /** Client and session facts kept for trace headers, logs and DSNs. */
  source: {
    listener: ListenerKind;
    remoteAddress: string;
    remotePort?: number;
    clientHostname?: string;
    helo?: string;
    authUser?: string;
    /** RFC 3848 `with` keyword used in our Received header (ESMTP, ESMTPS, ESMTPSA, LMTP …). */
    protocol: string;
    tls?: { cipher?: string; version?: string };
    /**
     * The original client a trusted peer named with XFORWARD for this message (the fields above
     * are the peer's then): our Received and log line name it, and it goes on with XFORWARD,
     * never as XCLIENT's (src/pipeline/origin.ts, src/transport/forward-client.ts).
     */
    forwarded?: ForwardedClientInfo;
  };
  /** Milliseconds since the epoch when the message was accepted. */
  receivedAt: number;
}

export type ListenerKind = 'smtp' | 'submission' | 'smtps' | 'lmtp' | 'local';
