// Every SMTP/LMTP reply Postern itself sends, as typed errors thrown and caught in one place, and
// the enhanced status codes for the replies smtp-server writes on its own.
//
// Standards: RFC 5321 §4.2 (reply codes), RFC 3463 (enhanced status codes: the class of the
// enhanced code always equals the first digit of the reply code), RFC 2034 §3 (every 2yz/4yz/5yz
// reply carries one, except the greeting and the HELO/EHLO/LHLO replies; 3yz never does),
// RFC 4954 §6 (AUTH replies), RFC 3207 (STARTTLS), RFC 1870 (SIZE), RFC 3461 (DSN parameters),
// RFC 1985 (ETRN).
// Config keys: none.
//
// Client text stays generic; the detail for operators goes in `cause` and the log.
import type { LogEvent } from '../log/events.js';
import type { Verdict } from '../pipeline/verdict.js';
import { isStoreUnavailable } from '../store/errors.js';

export type EnhancedCode = `${2 | 4 | 5}.${number}.${number}`;

const ENHANCED_RE = /^([245])\.(\d{1,3})\.(\d{1,3})$/;
/** A reply text that already starts with an enhanced code ("5.1.1 User unknown"). */
export const LEADING_ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}(?= |$)/;

/** True when `s` holds a C0 control character or DEL (it would split or garble a reply line). */
export function hasControlChars(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

export function isEnhancedCode(s: string): s is EnhancedCode {
  return ENHANCED_RE.test(s);
}

/** True when the enhanced code's class equals the reply code's (RFC 3463 §2). */
export function classMatches(code: number, enhanced: string): boolean {
  const m = ENHANCED_RE.exec(enhanced);
  return !!m && Number(m[1]) === Math.floor(code / 100);
}

export interface SmtpReplyOptions {
  /** The real reason, for the log only. */
  cause?: unknown;
  /** The client did something wrong (logged at info), as opposed to a server fault (error). */
  userError?: boolean;
  evt?: LogEvent;
  /** Close the connection after this reply (always so for 421). */
  disconnect?: boolean;
}

/**
 * An Error made without a stack trace, for errors that are not faults but answers (a reply, an
 * abort reason): capturing the stack costs several microseconds, on paths every message takes.
 */
export class StacklessError extends Error {
  constructor(message: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}

/**
 * A reply as an Error: smtp-server writes `err.responseCode` and `err.message`, and our adapter
 * (connection.ts) sees the enhanced code at the start of the message and adds no other.
 * Stackless: a reply is not a fault (the fault behind one is its `cause`).
 */
export class SmtpReply extends StacklessError {
  constructor(
    readonly code: number,
    readonly enhanced: EnhancedCode,
    readonly text: string,
    readonly opts: SmtpReplyOptions = {},
  ) {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpReply';
    if (!Number.isInteger(code) || code < 200 || code > 599 || (code >= 300 && code < 400)) throw new RangeError(`bad reply code ${code}`);
    if (!classMatches(code, enhanced)) throw new RangeError(`enhanced code ${enhanced} does not match reply code ${code}`);
    if (/[\r\n]/.test(text)) throw new RangeError('reply text must be one line');
  }
  /** smtp-server reads this. */
  get responseCode(): number {
    return this.code;
  }
  get isPermanent(): boolean {
    return this.code >= 500;
  }
  get disconnect(): boolean {
    return this.code === 421 || !!this.opts.disconnect;
  }
  /** The reply line as it goes on the wire (without CRLF). */
  override toString(): string {
    return `${this.code} ${this.enhanced} ${this.text}`;
  }
}

/** A lookup the reply needed could not be made (the store); `Replies.lookupFailed`. */
const lookupFailed = (cause?: unknown) => new SmtpReply(451, '4.3.0', 'Temporary lookup failure, try again later', { cause });

/** The catalogue. Each entry is a factory so every reply is a fresh Error with its own stack. */
export const Replies = {
  // --- connection (RFC 5321 §3.1: 554 may replace the greeting) ---
  earlyTalker: () => new SmtpReply(554, '5.5.1', 'Protocol error: client sent data before the greeting', { userError: true, evt: 'smtp.early_talker', disconnect: true }),
  httpOnSmtp: () => new SmtpReply(554, '5.5.1', 'Protocol error: this is an SMTP server, not HTTP', { userError: true, evt: 'smtp.http_on_smtp', disconnect: true }),
  proxyHeaderUntrusted: () => new SmtpReply(554, '5.7.1', 'PROXY protocol header not accepted from your address', { userError: true, evt: 'smtp.proxy_protocol.rejected', disconnect: true }),
  proxyHeaderInvalid: () => new SmtpReply(421, '4.7.0', 'Invalid PROXY protocol header', { userError: true, evt: 'smtp.proxy_protocol.rejected' }),
  tooManyConnections: () => new SmtpReply(421, '4.7.0', 'Too many connections, try again later', { evt: 'smtp.connect.rejected' }),
  tooManyConnectionsFromIp: () => new SmtpReply(421, '4.7.0', 'Too many connections from your address, try again later', { evt: 'smtp.connect.rejected' }),
  shuttingDown: () => new SmtpReply(421, '4.3.2', 'Service shutting down, try again later'),
  idleTimeout: () => new SmtpReply(421, '4.4.2', 'Idle timeout, closing connection'),
  // --- commands (RFC 5321 §4.2.4, §4.5.3.1.4) ---
  unknownCommand: () => new SmtpReply(500, '5.5.2', 'Command not recognized', { userError: true }),
  tooManyBadCommands: () => new SmtpReply(421, '4.7.0', 'Too many errors, closing connection', { userError: true }),
  commandLineTooLong: () => new SmtpReply(421, '4.5.2', 'Line too long, closing connection', { userError: true }),
  badSequence: (what: string) => new SmtpReply(503, '5.5.1', what, { userError: true }),
  unsupportedParameter: (name: string) => new SmtpReply(555, '5.5.4', `Unsupported parameter ${name}`, { userError: true }),
  badParameter: (name: string) => new SmtpReply(501, '5.5.4', `Invalid ${name} parameter`, { userError: true }),
  /** RFC 5321 §4.1.1: DATA and RSET take no argument; AUTH needs a mechanism (Postfix's wording). */
  commandSyntax: (usage: string) => new SmtpReply(501, '5.5.4', `Syntax: ${usage}`, { userError: true }),
  // --- TLS and AUTH (RFC 3207 §4, RFC 4954 §4 and §6) ---
  authRequired: () => new SmtpReply(530, '5.7.0', 'Authentication required', { userError: true }),
  encryptionRequired: () => new SmtpReply(538, '5.7.11', 'Encryption required for requested authentication mechanism', { userError: true }),
  authFailed: () => new SmtpReply(535, '5.7.8', 'Authentication credentials invalid', { userError: true, evt: 'smtp.auth.failed' }),
  authTempfail: (cause?: unknown) => new SmtpReply(454, '4.7.0', 'Temporary authentication failure', { cause, evt: 'smtp.auth.failed' }),
  authBadBase64: () => new SmtpReply(501, '5.5.2', 'Cannot decode base64 client response', { userError: true }),
  authCancelled: () => new SmtpReply(501, '5.7.0', 'Authentication cancelled', { userError: true }),
  /** RFC 4954 §4: "An AUTH command issued during a mail transaction MUST be rejected with a 503 reply." */
  authInTransaction: () => new SmtpReply(503, '5.5.1', 'MAIL transaction in progress', { userError: true }),
  /** RFC 4616 §2: the authenticated user may not act as the authorization identity it named. */
  authzidRefused: () => new SmtpReply(535, '5.7.8', 'Cannot authorize as another user', { userError: true, evt: 'smtp.auth.failed' }),
  // --- MAIL / RCPT (RFC 5321 §4.1.1.2-3, RFC 3463 X.1.x) ---
  senderSyntax: () => new SmtpReply(501, '5.1.7', 'Bad sender address syntax', { userError: true, evt: 'smtp.mail.rejected' }),
  recipientSyntax: () => new SmtpReply(501, '5.1.3', 'Bad recipient address syntax', { userError: true, evt: 'smtp.rcpt.rejected' }),
  needsSmtputf8: () => new SmtpReply(553, '5.6.7', 'Non-ASCII address requires SMTPUTF8', { userError: true }),
  userUnknown: () => new SmtpReply(550, '5.1.1', 'User unknown', { userError: true, evt: 'smtp.rcpt.rejected' }),
  relayDenied: () => new SmtpReply(554, '5.7.1', 'Relay access denied', { userError: true, evt: 'smtp.rcpt.rejected' }),
  tooManyRecipients: () => new SmtpReply(452, '4.5.3', 'Too many recipients', { userError: true, evt: 'smtp.rcpt.rejected' }),
  // --- DATA (RFC 1870 §6.3, RFC 5321 §4.5.3.1.6, §2.3.8) ---
  messageTooBig: () => new SmtpReply(552, '5.3.4', 'Message size exceeds fixed maximum message size', { userError: true, evt: 'smtp.data.rejected' }),
  dataLineTooLong: () => new SmtpReply(552, '5.3.4', 'Message line too long', { userError: true, evt: 'smtp.data.rejected' }),
  bareNewline: () => new SmtpReply(550, '5.6.11', 'Bare <CR> or <LF> in message; use <CRLF> line ends', { userError: true, evt: 'smtp.data.rejected' }),
  nulInData: () => new SmtpReply(554, '5.6.0', 'Message contains NUL characters', { userError: true, evt: 'smtp.data.rejected' }),
  queued: (id: string) => new SmtpReply(250, '2.0.0', `Ok: queued as ${id}`),
  delivered: (id: string) => new SmtpReply(250, '2.0.0', `Ok: delivered ${id}`),
  queueFailed: (cause?: unknown) => new SmtpReply(451, '4.3.0', 'Temporary failure in queueing, try again later', { cause }),
  // --- ETRN (RFC 1985 §5.3; etrn.ts) ---
  etrnStarted: (node: string, count: number) => new SmtpReply(250, '2.0.0', `Queuing for node ${node} started (${count} message${count === 1 ? '' : 's'})`),
  etrnNoMessages: (node: string) => new SmtpReply(251, '2.0.0', `No messages waiting for node ${node}`),
  etrnUnable: (node: string, cause?: unknown) => new SmtpReply(458, '4.3.0', `Unable to queue messages for node ${node}`, { cause }),
  etrnNodeNotAllowed: (node: string, reason: string) => new SmtpReply(459, '4.7.1', `Node ${node} not allowed: ${reason}`, { userError: true }),
  etrnSyntax: () => new SmtpReply(500, '5.5.2', 'Syntax: ETRN [@]domain', { userError: true }),
  etrnBadDomain: () => new SmtpReply(501, '5.5.4', 'Syntax error in parameters: ETRN [@]domain', { userError: true }),
  etrnDenied: () => new SmtpReply(554, '5.7.1', 'ETRN not allowed from your address', { userError: true }),
  // --- generic ---
  policyTempfail: (cause?: unknown) => new SmtpReply(451, '4.3.0', 'Policy check unavailable, try again later', { cause }),
  policyReject: () => new SmtpReply(550, '5.7.1', 'Rejected by policy', { userError: true }),
  // A store that could not answer (Redis away, an embedded store in a newer format) reads as
  // Postfix's "Temporary lookup failure": the client is told it is passing, the operator where.
  internalError: (cause?: unknown) => (isStoreUnavailable(cause) ? lookupFailed(cause) : new SmtpReply(451, '4.3.0', 'Internal error, try again later', { cause })),
  lookupFailed,
  /** In place of a greeting (RFC 5321 §3.1 allows 220, 554 or 421 there). */
  greetingUnavailable: (cause?: unknown) => new SmtpReply(421, '4.3.0', 'Service not available, try again later', { cause }),
} satisfies Record<string, (...args: never[]) => SmtpReply>;

/**
 * The reply for a reject/tempfail verdict. A plugin's code or enhanced code of the wrong class
 * (a 5.x.x with 451, a 250 as a "reject") never reaches the wire: the generic reply for the
 * verdict kind is used instead, with the plugin's text kept when it is one clean line.
 */
export function replyFromVerdict(v: Extract<Verdict, { kind: 'reject' | 'tempfail' }>): SmtpReply {
  const want = v.kind === 'reject' ? 5 : 4;
  const text = typeof v.text === 'string' && v.text && !hasControlChars(v.text) ? v.text : undefined;
  const okCode = Number.isInteger(v.code) && Math.floor(v.code / 100) === want && v.code % 100 < 60;
  if (okCode && classMatches(v.code, v.enhanced)) {
    return new SmtpReply(v.code, v.enhanced as EnhancedCode, text ?? (want === 5 ? 'Rejected by policy' : 'Try again later'), { userError: want === 5, disconnect: v.disconnect });
  }
  const base = want === 5 ? Replies.policyReject() : Replies.policyTempfail();
  return new SmtpReply(base.code, base.enhanced, text ?? base.text, { userError: want === 5, disconnect: v.disconnect, cause: `plugin gave ${v.code} ${v.enhanced}` });
}

// ---------------------------------------------------------------------------------------------
// Enhanced codes for the replies smtp-server writes itself. The library derives one from the
// reply code and a context of its own, which is wrong for several replies (a 421 for a too-long
// line as "4.4.2", the 538 of RFC 4954 as "5.7.0"); this table is what the adapter uses instead.
// A text not listed falls back to the library's own mapping, then to the class default.

const LIBRARY_REPLY_CODES: [RegExp, EnhancedCode][] = [
  [/^Timeout/i, '4.4.2'],
  [/Server shutting down/i, '4.3.2'],
  [/Too many connected clients/i, '4.7.0'],
  [/too many unauthenticated commands/i, '4.7.0'],
  [/too many unrecognized commands/i, '4.7.0'],
  [/Command line too long/i, '4.5.2'],
  [/HTTP requests not allowed/i, '4.7.0'],
  [/You talk too soon/i, '4.7.0'],
  [/not allowed in LMTP server/i, '5.5.1'],
  [/send (HELO\/EHLO|LHLO) first/i, '5.5.1'],
  [/nested MAIL command/i, '5.5.1'],
  [/need (MAIL|RCPT) command/i, '5.5.1'],
  [/No identity changes permitted/i, '5.5.1'],
  [/TLS already active/i, '5.5.1'],
  [/Mail transaction in progress/i, '5.5.1'],
  [/Must issue a STARTTLS command first/i, '5.7.11'],
  [/Unrecognized authentication type/i, '5.5.4'],
  [/Authentication aborted/i, '5.7.0'],
  [/invalid userdata|missing username/i, '5.5.2'],
  [/Bad sender address syntax/i, '5.1.7'],
  [/Bad recipient address syntax/i, '5.1.3'],
  [/exceeds fixed maximum message size/i, '5.3.4'],
  [/too many recipients/i, '4.5.3'],
  [/authentication Required/i, '5.7.0'],
  [/command not recognized/i, '5.5.2'],
  [/REQUIRETLS not permitted/i, '5.7.10'],
  [/^Error: Not allowed/i, '5.7.1'],
  [/Try to send something/i, '2.5.0'],
  [/Ready to start TLS/i, '2.0.0'],
];

/** Generic code per reply code (RFC 3463 §3), used when nothing more specific is known. */
const BY_REPLY_CODE: Record<number, EnhancedCode> = {
  211: '2.0.0', 214: '2.0.0', 220: '2.0.0', 221: '2.0.0', 235: '2.7.0', 250: '2.0.0', 251: '2.1.5', 252: '2.5.0',
  421: '4.3.0', 450: '4.2.1', 451: '4.3.0', 452: '4.3.1', 454: '4.7.0',
  500: '5.5.2', 501: '5.5.4', 502: '5.5.1', 503: '5.5.1', 504: '5.5.4', 530: '5.7.0', 534: '5.7.9', 535: '5.7.8', 538: '5.7.11',
  550: '5.7.1', 551: '5.1.6', 552: '5.3.4', 553: '5.1.3', 554: '5.6.0', 555: '5.5.4',
};

/**
 * The enhanced code for a reply smtp-server builds itself. `libraryGuess` is what the library
 * would have used (its context table), considered only after our text table.
 */
export function enhancedForLibraryReply(code: number, text: string, libraryGuess?: string): EnhancedCode {
  for (const [re, enhanced] of LIBRARY_REPLY_CODES) {
    if (re.test(text) && classMatches(code, enhanced)) return enhanced;
  }
  if (libraryGuess && classMatches(code, libraryGuess)) return libraryGuess as EnhancedCode;
  const byCode = BY_REPLY_CODE[code];
  if (byCode) return byCode;
  return `${Math.floor(code / 100) as 2 | 4 | 5}.0.0`;
}
