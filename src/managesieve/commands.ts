// The ManageSieve command table (RFC 5804 §2): for each command the states it is allowed in, its
// TLS rule, its argument kinds, and the handler. The dispatcher in session.ts checks all of these
// once, then calls `run`. Handlers return a Reply (data lines and the OK text) or throw a
// ManageSieveReply / ScriptError; they never write to the connection.
//
//   CAPABILITY    §2.4   any state
//   LOGOUT        §2.3   any state; the server closes after OK
//   NOOP          §2.13  any state; NOOP "x" answers OK (TAG "x")
//   STARTTLS      §2.2   before authentication, not under TLS; capabilities follow the handshake
//   AUTHENTICATE  §2.1   before authentication; PLAIN only, only under TLS (ENCRYPT-NEEDED)
//   UNAUTHENTICATE §2.14  back to the non-authenticated state
//   HAVESPACE     §2.5   PUTSCRIPT  §2.6   LISTSCRIPTS §2.7   SETACTIVE §2.8   GETSCRIPT §2.9
//   DELETESCRIPT  §2.10  RENAMESCRIPT §2.11   CHECKSCRIPT §2.12      (authenticated)
import { setTimeout as sleep } from 'node:timers/promises';
import { logEvent } from '../log/logger.js';
import type { SieveError } from '../sieve/ast.js';
import { MAX_AUTH_FAILURES, MAX_SCRIPT_SIZE } from './limits.js';
import { decodeUtf8, ParseError } from './parser.js';
import { encodeString, Replies, type ResponseCode } from './replies.js';
import type { ManageSieveSession, SessionState } from './session.js';

export type ArgKind = 'string' | 'number' | 'string?';
export type ArgValue = Buffer | number | undefined;

export interface Reply {
  /** Response lines before the status line, each without its CRLF. */
  data?: string[];
  /** The OK's text and response code. */
  text?: string;
  code?: ResponseCode;
  /** What the connection does after writing the reply. */
  after?: 'starttls' | 'close';
  /** A SASL challenge instead of a status (RFC 5804 §2.1): the next client line answers it. */
  challenge?: { data: string; next: (response: Buffer) => Promise<Reply> };
}

export interface CommandSpec {
  states: SessionState['kind'][];
  /** 'required': refused with NO (ENCRYPT-NEEDED) before TLS; 'forbidden': refused under TLS. */
  tls?: 'required' | 'forbidden';
  args: ArgKind[];
  run(s: ManageSieveSession, args: ArgValue[]): Promise<Reply> | Reply;
}

const str = (v: ArgValue) => v as Buffer;
const name = (v: ArgValue) => decodeUtf8(str(v), 'Script name');
const user = (s: ManageSieveSession): string => {
  if (s.state.kind !== 'authenticated') throw Replies.wrongState(false);
  return s.state.user;
};

/** RFC 5804 §2.6: "line N: message", one error a line (at most 20, then a count). */
export function formatScriptErrors(errors: SieveError[]): string {
  const shown = errors.slice(0, 20).map((e) => `line ${e.line}: ${e.message}`);
  if (errors.length > shown.length) shown.push(`(${errors.length - shown.length} more errors)`);
  return shown.join('\r\n');
}

/** Compiles a script sent by the client; throws NO with the errors when it does not compile. */
function validate(s: ManageSieveSession, bytes: Buffer): string {
  if (bytes.length > MAX_SCRIPT_SIZE) throw Replies.quotaSize(`Script is larger than ${MAX_SCRIPT_SIZE} octets`);
  const text = decodeUtf8(bytes, 'Script');
  const r = s.deps.compile(text);
  if (!r.ok) throw Replies.invalidScript(formatScriptErrors(r.errors));
  return text;
}

async function authenticatePlain(s: ManageSieveSession, response: Buffer): Promise<Reply> {
  // RFC 4616 §2: message = [authzid] NUL authcid NUL passwd, base64 on the wire (RFC 5804 §2.1).
  const b64 = response.toString('latin1');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) return failAuth(s, 'malformed');
  const parts = Buffer.from(b64, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3 || !parts[1] || !parts[2]) return failAuth(s, 'malformed');
  const [authzid, authcid, password] = parts as [string, string, string];
  const canonical = await s.deps.directory.authenticate(authcid, password);
  if (canonical === null) return failAuth(s, 'failed', authcid);
  if (authzid !== '' && authzid.toLowerCase() !== canonical.toLowerCase()) throw Replies.authzidRefused();
  s.state = { kind: 'authenticated', user: canonical };
  logEvent(s.log, 'info', 'managesieve.auth.ok', { user: canonical });
  return { text: 'Authenticated' };
}

/** A failed attempt waits (limits.ts AUTH_FAILURE_DELAY_MS × failures), then NO, or BYE at the limit. */
async function failAuth(s: ManageSieveSession, why: 'malformed' | 'failed', username?: string): Promise<Reply> {
  if (s.state.kind !== 'notAuthenticated') throw Replies.wrongState(true);
  const failures = ++s.state.authFailures;
  logEvent(s.log, 'info', 'managesieve.auth.failed', { username, why, failures });
  await sleep(s.deps.authFailureDelayMs * failures);
  if (failures >= MAX_AUTH_FAILURES) throw Replies.tooManyAuthFailures();
  throw why === 'malformed' ? Replies.authMalformed() : Replies.authFailed();
}

export const commandTable = {
  CAPABILITY: { states: ['notAuthenticated', 'authenticated'], args: [], run: (s) => ({ data: s.capabilities(), text: 'Capability completed' }) },
  LOGOUT: {
    states: ['notAuthenticated', 'authenticated'],
    args: [],
    run: (s) => {
      s.state = { kind: 'logout' };
      return { text: 'Logout completed', after: 'close' };
    },
  },
  NOOP: {
    states: ['notAuthenticated', 'authenticated'],
    args: ['string?'],
    run: (_s, [tag]) => (tag === undefined ? { text: 'Done' } : { code: { tag: decodeUtf8(str(tag), 'Tag') }, text: 'Done' }),
  },
  STARTTLS: { states: ['notAuthenticated'], tls: 'forbidden', args: [], run: () => ({ text: 'Begin TLS negotiation now', after: 'starttls' }) },
  AUTHENTICATE: {
    states: ['notAuthenticated'],
    tls: 'required',
    args: ['string', 'string?'],
    run: (s, [mech, initial]) => {
      if (str(mech).toString('latin1').toUpperCase() !== 'PLAIN') throw Replies.unsupportedMechanism();
      if (initial !== undefined) return authenticatePlain(s, str(initial));
      return { challenge: { data: '', next: (r) => authenticatePlain(s, r) } };
    },
  },
  UNAUTHENTICATE: {
    states: ['authenticated'],
    args: [],
    run: (s) => {
      s.state = { kind: 'notAuthenticated', authFailures: 0 };
      return { text: 'Unauthenticate completed' };
    },
  },
  HAVESPACE: {
    states: ['authenticated'],
    args: ['string', 'number'],
    run: async (s, [n, size]) => {
      await s.deps.repo.checkSpace(user(s), name(n), size as number);
      return { text: 'Putscript would succeed' };
    },
  },
  PUTSCRIPT: {
    states: ['authenticated'],
    args: ['string', 'string'],
    run: async (s, [n, script]) => {
      const u = user(s);
      const scriptName = name(n);
      // Quota before compiling: the cheaper refusal first, and nothing is stored either way.
      await s.deps.repo.checkSpace(u, scriptName, str(script).length);
      const text = validate(s, str(script));
      await s.deps.repo.put(u, scriptName, text);
      logEvent(s.log, 'info', 'managesieve.script.changed', { user: u, op: 'put', name: scriptName });
      return { text: 'Putscript completed' };
    },
  },
  LISTSCRIPTS: {
    states: ['authenticated'],
    args: [],
    run: async (s) => {
      const list = await s.deps.repo.list(user(s));
      return { data: list.map((e) => encodeString(e.name) + (e.active ? ' ACTIVE' : '')), text: 'Listscripts completed' };
    },
  },
  SETACTIVE: {
    states: ['authenticated'],
    args: ['string'],
    run: async (s, [n]) => {
      const u = user(s);
      const scriptName = decodeUtf8(str(n), 'Script name');
      await s.deps.repo.setActive(u, scriptName);
      logEvent(s.log, 'info', 'managesieve.script.changed', { user: u, op: scriptName === '' ? 'deactivate' : 'activate', name: scriptName });
      return { text: scriptName === '' ? 'Script deactivated' : 'Setactive completed' };
    },
  },
  GETSCRIPT: {
    states: ['authenticated'],
    args: ['string'],
    run: async (s, [n]) => {
      const script = await s.deps.repo.get(user(s), name(n));
      if (script === null) throw Replies.nonexistent();
      // Always a literal (§2.9's example; some clients accept nothing else).
      return { data: [`{${Buffer.byteLength(script, 'utf8')}}\r\n${script}`], text: 'Getscript completed' };
    },
  },
  DELETESCRIPT: {
    states: ['authenticated'],
    args: ['string'],
    run: async (s, [n]) => {
      const u = user(s);
      const scriptName = name(n);
      await s.deps.repo.delete(u, scriptName);
      logEvent(s.log, 'info', 'managesieve.script.changed', { user: u, op: 'delete', name: scriptName });
      return { text: 'Deletescript completed' };
    },
  },
  RENAMESCRIPT: {
    states: ['authenticated'],
    args: ['string', 'string'],
    run: async (s, [from, to]) => {
      const u = user(s);
      await s.deps.repo.rename(u, name(from), name(to));
      logEvent(s.log, 'info', 'managesieve.script.changed', { user: u, op: 'rename', name: name(from), to: name(to) });
      return { text: 'Renamescript completed' };
    },
  },
  CHECKSCRIPT: {
    states: ['authenticated'],
    args: ['string'],
    run: (s, [script]) => {
      validate(s, str(script));
      return { text: 'Script is valid' };
    },
  },
} satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof commandTable;

/** Checks argument count and kinds against the spec; throws a syntax NO. */
export function checkArgs(spec: CommandSpec, args: { kind: string; value: Buffer | number | string }[]): ArgValue[] {
  const required = spec.args.filter((a) => !a.endsWith('?')).length;
  if (args.length < required || args.length > spec.args.length) throw new ParseError(`expected ${required === spec.args.length ? required : `${required} to ${spec.args.length}`} arguments`);
  return spec.args.map((kind, i) => {
    const a = args[i];
    if (a === undefined) return undefined;
    if (kind === 'number') {
      if (a.kind !== 'number') throw new ParseError(`argument ${i + 1} must be a number`);
      return a.value as number;
    }
    if (a.kind !== 'string') throw new ParseError(`argument ${i + 1} must be a string`);
    return a.value as Buffer;
  });
}
