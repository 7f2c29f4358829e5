// MAIL FROM / RCPT TO parameter checks on the raw command line, before smtp-server sees it (the
// library decodes xtext loosely and lets unknown parameters through).
//
// Standards: RFC 5321 §4.1.1.11 and §4.1.2 (esmtp-param, unknown parameters → 555), RFC 1870 (SIZE),
// RFC 6152 (BODY=8BITMIME), RFC 6531 §3.4 (SMTPUTF8), RFC 4954 §5 (MAIL AUTH=), RFC 3461 §4
// (DSN: xtext; NOTIFY §4.1, ORCPT §4.2, RET §4.3, ENVID §4.4). Bad syntax → 501 5.5.4.
// Config keys: none.
import type { DsnNotify } from '../queue/envelope.js';
import { Replies, type SmtpReply } from './replies.js';

export interface MailParams {
  size?: number;
  body?: '7BIT' | '8BITMIME';
  smtputf8?: boolean;
  ret?: 'FULL' | 'HDRS';
  /** xtext-decoded. */
  envid?: string;
}

export interface RcptParams {
  notify?: DsnNotify[];
  /** "addr-type;xtext" as received (RFC 3461 §4.2). */
  orcpt?: string;
}

// RFC 3461 §4: xchar = %d33-42 / %d44-60 / %d62-126 ("+" and "=" excluded); hexchar = "+" 2HEXDIG (upper case).
const XTEXT_RE = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/;
// RFC 5322 atom (addr-type of ORCPT).
const ATOM_RE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/;

export function isXtext(s: string): boolean {
  return XTEXT_RE.test(s);
}

export function decodeXtext(s: string): string {
  return s.replace(/\+([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The xtext form of `s` (UTF-8 bytes outside xchar written as "+HH"). */
export function encodeXtext(s: string): string {
  if (/^[\x21-\x2a\x2c-\x3c\x3e-\x7e]*$/.test(s)) return s;
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    out += b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  }
  return out;
}

/**
 * The "<...>" path at the start of `rest` and what follows it. A quoted local part (RFC 5321
 * §4.1.2 Quoted-string) may hold spaces and ">", so the path ends at the first ">" outside
 * quotes; otherwise it is the first whitespace-separated token. Null when there is no such path.
 */
export function leadingPath(rest: string): { path: string; after: string } | null {
  if (!rest.startsWith('<')) return null;
  let quoted = false;
  for (let i = 1; i < rest.length; i++) {
    const c = rest[i];
    if (quoted && c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && (c === '>' || c === '<')) {
      if (c === '<') return null;
      const path = rest.slice(0, i + 1);
      const after = rest.slice(i + 1);
      // Outside quotes a path has no spaces, and a parameter follows only after one.
      if (after !== '' && !/^\s/.test(after)) return null;
      return { path, after };
    } else if (!quoted && /\s/.test(c!)) return null;
  }
  return null;
}

/** Splits "MAIL FROM:<a@b> K=V K2" into the path and the parameter list. */
export function splitPathAndParams(line: string): { path: string; params: [string, string | true][] } | null {
  const colon = line.indexOf(':');
  if (colon < 0) return null;
  // A malformed path is smtp-server's to refuse (501 5.1.7 / 5.1.3), before any parameter.
  const lead = leadingPath(line.slice(colon + 1).trim());
  if (!lead) return null;
  const path = lead.path;
  const parts = lead.after.split(/\s+/).filter(Boolean);
  const params: [string, string | true][] = parts.map((p) => {
    const eq = p.indexOf('=');
    return eq < 0 ? [p.toUpperCase(), true] : [p.slice(0, eq).toUpperCase(), p.slice(eq + 1)];
  });
  return { path, params };
}

type Result<T> = { ok: true; value: T } | { ok: false; reply: SmtpReply };

function dupCheck(params: [string, string | true][]): SmtpReply | null {
  const seen = new Set<string>();
  for (const [k] of params) {
    if (seen.has(k)) return Replies.badParameter(k); // RFC 3461 §4: each at most once
    seen.add(k);
  }
  return null;
}

export function parseMailParams(line: string, opts: { dsn: boolean; smtputf8: boolean }): Result<MailParams> {
  const split = splitPathAndParams(line);
  if (!split) return { ok: true, value: {} }; // the library answers the syntax error
  const dup = dupCheck(split.params);
  if (dup) return { ok: false, reply: dup };
  const out: MailParams = {};
  for (const [key, value] of split.params) {
    const bad = (): Result<MailParams> => ({ ok: false, reply: Replies.badParameter(key) });
    switch (key) {
      case 'SIZE':
        if (typeof value !== 'string' || !/^\d{1,20}$/.test(value)) return bad();
        out.size = Number(value);
        break;
      case 'BODY': {
        const v = typeof value === 'string' ? value.toUpperCase() : '';
        if (v !== '7BIT' && v !== '8BITMIME') return bad();
        out.body = v;
        break;
      }
      case 'SMTPUTF8':
        if (!opts.smtputf8) return { ok: false, reply: Replies.unsupportedParameter(key) };
        if (value !== true) return bad();
        out.smtputf8 = true;
        break;
      case 'RET': {
        if (!opts.dsn) return { ok: false, reply: Replies.unsupportedParameter(key) };
        const v = typeof value === 'string' ? value.toUpperCase() : '';
        if (v !== 'FULL' && v !== 'HDRS') return bad();
        out.ret = v;
        break;
      }
      case 'ENVID': {
        if (!opts.dsn) return { ok: false, reply: Replies.unsupportedParameter(key) };
        // RFC 3461 §4.4: xtext, printable ASCII once decoded, at most 100 characters.
        if (typeof value !== 'string' || !value || !isXtext(value)) return bad();
        const decoded = decodeXtext(value);
        if (decoded.length > 100 || !/^[\x20-\x7e]+$/.test(decoded)) return bad();
        out.envid = decoded;
        break;
      }
      case 'AUTH':
        // RFC 4954 §5: accepted and ignored unless the client is trusted; we never trust it.
        if (typeof value !== 'string' || !(value === '<>' || isXtext(value))) return bad();
        break;
      default:
        return { ok: false, reply: Replies.unsupportedParameter(key) };
    }
  }
  return { ok: true, value: out };
}

export function parseRcptParams(line: string, opts: { dsn: boolean }): Result<RcptParams> {
  const split = splitPathAndParams(line);
  if (!split) return { ok: true, value: {} };
  const dup = dupCheck(split.params);
  if (dup) return { ok: false, reply: dup };
  const out: RcptParams = {};
  for (const [key, value] of split.params) {
    const bad = (): Result<RcptParams> => ({ ok: false, reply: Replies.badParameter(key) });
    if ((key === 'NOTIFY' || key === 'ORCPT') && !opts.dsn) return { ok: false, reply: Replies.unsupportedParameter(key) };
    switch (key) {
      case 'NOTIFY': {
        // RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )
        if (typeof value !== 'string' || !value) return bad();
        const items = value.toUpperCase().split(',');
        const allowed = new Set(['SUCCESS', 'FAILURE', 'DELAY']);
        if (items.length === 1 && items[0] === 'NEVER') {
          out.notify = ['NEVER'];
          break;
        }
        if (new Set(items).size !== items.length || !items.every((i) => allowed.has(i))) return bad();
        out.notify = items as DsnNotify[];
        break;
      }
      case 'ORCPT': {
        // RFC 3461 §4.2: addr-type ";" xtext, at most 500 characters.
        if (typeof value !== 'string' || value.length > 500) return bad();
        const semi = value.indexOf(';');
        if (semi <= 0) return bad();
        const type = value.slice(0, semi);
        const addr = value.slice(semi + 1);
        if (!ATOM_RE.test(type) || !addr || !isXtext(addr)) return bad();
        out.orcpt = `${type};${addr}`;
        break;
      }
      default:
        return { ok: false, reply: Replies.unsupportedParameter(key) };
    }
  }
  return { ok: true, value: out };
}
