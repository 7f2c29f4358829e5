// Every ManageSieve response we send, and how it is written (RFC 5804 §1.2, §1.3, §4):
//   response = ("OK" / "NO" / "BYE") [SP "(" resp-code ")"] [SP string] CRLF
// Strings go out quoted when they can (at most 1024 octets, no CR, LF or NUL) and as a literal
// "{n}" CRLF octets otherwise. Handlers throw a ManageSieveReply (NO or BYE) and never write
// bytes; the session catches it in one place and encodes it here.
import { MAX_QUOTED } from './limits.js';

/** RFC 5804 §1.3 response codes we use; TAG (§2.13 NOOP) carries the client's string. */
export type ResponseCode =
  | 'AUTH-TOO-WEAK'
  | 'ENCRYPT-NEEDED'
  | 'QUOTA/MAXSCRIPTS'
  | 'QUOTA/MAXSIZE'
  | 'TRYLATER'
  | 'ACTIVE'
  | 'NONEXISTENT'
  | 'ALREADYEXISTS'
  | { tag: string };

/** A string as the server sends it (RFC 5804 §4 string = quoted / literal-s2c). */
export function encodeString(value: string): string {
  const octets = Buffer.byteLength(value, 'utf8');
  // eslint-disable-next-line no-control-regex
  if (octets <= MAX_QUOTED && !/[\r\n\u0000]/.test(value)) return `"${value.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  return `{${octets}}\r\n${value}`;
}

function encodeCode(code: ResponseCode): string {
  return typeof code === 'string' ? code : `TAG ${encodeString(code.tag)}`;
}

/** One status line, CRLF included. */
export function statusLine(kind: 'OK' | 'NO' | 'BYE', text?: string, code?: ResponseCode): string {
  let line: string = kind;
  if (code !== undefined) line += ` (${encodeCode(code)})`;
  if (text !== undefined) line += ` ${encodeString(text)}`;
  return `${line}\r\n`;
}

/** A refusal: NO keeps the session, BYE ends it (RFC 5804 §1.2). */
export class ManageSieveReply extends Error {
  constructor(
    readonly kind: 'NO' | 'BYE',
    readonly text: string,
    readonly code?: ResponseCode,
    /** userError: the client's doing (logged at info); otherwise a server fault (error). */
    readonly opts: { cause?: unknown; userError?: boolean } = { userError: true },
  ) {
    super(text);
    this.name = 'ManageSieveReply';
  }

  toWire(): string {
    return statusLine(this.kind, this.text, this.code);
  }
}

const no = (text: string, code?: ResponseCode) => new ManageSieveReply('NO', text, code);
const bye = (text: string, code?: ResponseCode) => new ManageSieveReply('BYE', text, code);

export const Replies = {
  unknownCommand: () => no('Unknown command'),
  syntax: (detail: string) => no(`Syntax error: ${detail}`),
  wrongState: (authenticated: boolean) => no(authenticated ? 'Not allowed after authentication' : 'Authenticate first'),
  tlsActive: () => no('TLS is already active'),
  // RFC 5804 §2.1: PLAIN sends the password in clear, so it waits for STARTTLS.
  encryptNeeded: () => no('Use STARTTLS before authenticating', 'ENCRYPT-NEEDED'),
  unsupportedMechanism: () => no('Unsupported SASL mechanism; use PLAIN'),
  authCancelled: () => no('Authentication cancelled'),
  authMalformed: () => no('Malformed SASL PLAIN response'),
  authFailed: () => no('Authentication failed'),
  // RFC 5804 §1.3: the mechanism cannot act for another authorization identity.
  authzidRefused: () => no('Cannot authorize as another user', 'AUTH-TOO-WEAK'),
  tooManyAuthFailures: () => bye('Too many failed authentications'),
  tooManyBadCommands: () => bye('Too many invalid commands'),
  lineTooLong: () => bye('Command line too long'),
  literalTooLarge: () => no('Literal too large', 'QUOTA/MAXSIZE'),
  literalWayTooLarge: () => bye('Literal too large', 'QUOTA/MAXSIZE'),
  idle: () => bye('Disconnected for inactivity'),
  shutdown: () => bye('Server shutting down', 'TRYLATER'),
  // RFC 5804 §2.6: the text says why the script is invalid, one "line N: message" per error.
  invalidScript: (errors: string) => no(errors),
  nonexistent: (text = 'There is no script by that name') => no(text, 'NONEXISTENT'),
  alreadyExists: () => no('A script by that name already exists', 'ALREADYEXISTS'),
  active: () => no('The script is active; deactivate it first', 'ACTIVE'),
  quotaSize: (text: string) => no(text, 'QUOTA/MAXSIZE'),
  quotaCount: (text: string) => no(text, 'QUOTA/MAXSCRIPTS'),
  invalidName: (text: string) => no(`Invalid script name: ${text}`),
  tryLater: (cause: unknown) => new ManageSieveReply('NO', 'Temporary server error, try again later', 'TRYLATER', { cause, userError: false }),
} satisfies Record<string, (...args: never[]) => ManageSieveReply>;
