// ManageSieve (RFC 5804) limits in one place, each with its reason. They are code constants, not
// config keys: a site that needs others changes them here (and their tests say what they guard).
// The script repository (repository.ts) enforces the quota ones for every writer, not only for
// ManageSieve sessions.

/** Largest script we store, in octets (RFC 5804 §1.3 QUOTA/MAXSIZE). The engine refuses scripts
 *  above 1 MiB before parsing (src/sieve/limits.ts maxScriptSize); personal scripts are far
 *  smaller in practice, and each one is read at every delivery to its user. */
export const MAX_SCRIPT_SIZE = 256 * 1024;

/** Scripts per user (RFC 5804 §1.3 QUOTA/MAXSCRIPTS). Only one is active at a time (§2.8); the
 *  others are drafts, and this keeps one user's hash in the store small. */
export const MAX_SCRIPTS_PER_USER = 32;

/** Script names, in octets of UTF-8 (RFC 5804 §1.6 lets the server refuse names it dislikes). */
export const MAX_SCRIPT_NAME = 256;

/** A command line without its literals, CRLF excluded. The longest legal line is a command name
 *  and two quoted strings of at most 1024 octets each (RFC 5804 §4), escapes doubling them. */
export const MAX_LINE = 8 * 1024;

/** Quoted strings: RFC 5804 §4 limits them to 1024 octets between the quotes. */
export const MAX_QUOTED = 1024;

/** Literals we accept into memory: a script plus room for CRLF conversions by clients. */
export const MAX_LITERAL = MAX_SCRIPT_SIZE + 1024;

/** A client literal ({n+} is non-synchronizing: the octets follow whatever we answer) larger than
 *  MAX_LITERAL but at most this is read and thrown away, so the session stays in step and answers
 *  NO (QUOTA/MAXSIZE). Anything larger ends the connection with BYE: reading it would let one
 *  client keep a connection busy for gigabytes. */
export const MAX_LITERAL_DISCARD = 8 * 1024 * 1024;

/** Commands refused as malformed or unknown before the session is closed with BYE. */
export const MAX_BAD_COMMANDS = 10;

/** Failed AUTHENTICATE attempts before BYE (each failure already waits, see AUTH_FAILURE_DELAY_MS). */
export const MAX_AUTH_FAILURES = 3;

/** Wait before answering a failed AUTHENTICATE, multiplied by the failures so far in the session:
 *  password guessing costs time, a typo costs one second. */
export const AUTH_FAILURE_DELAY_MS = 1000;

/** A session idle this long is closed with BYE (a server may close idle
 *  connections; 30 minutes as IMAP's RFC 9051 §5.4 autologout minimum). */
export const IDLE_TIMEOUT_MS = 30 * 60 * 1000;

/** Open ManageSieve connections per listener; more are refused at accept. */
export const MAX_CONNECTIONS = 200;
