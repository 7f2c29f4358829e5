// Envelope address parsing (RFC 5321 §4.1.2 Mailbox, RFC 6531 §3.3 for UTF-8) and the checks that
// keep relay decisions honest. This module decides what the domain of an address IS; routing and
// relay control must use it rather than split strings themselves.
//
// Grammar enforced (RFC 5321 §4.1.2, with RFC 6531's UTF-8 extension of atext/qtext/sub-domain):
//   Mailbox       = Local-part "@" ( Domain / address-literal )
//   Local-part    = Dot-string / Quoted-string        (atext only, no leading/trailing/double dot)
//   Quoted-string = DQUOTE *( qtextSMTP / quoted-pairSMTP ) DQUOTE
//   Domain        = sub-domain *("." sub-domain)        (letters, digits, hyphens, UTF-8; no edge hyphen)
//   address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]" (§4.1.3; a General-address-literal is refused)
// Limits (§4.5.3.1): local part 64 octets, domain 255, each label 63, the whole path 256.
// Control characters (C0, DEL) are refused anywhere.
//
// The tricks an open-relay probe uses are reported in `tricks`; relay-acl treats an address with
// any trick as suspect:
//   percent-hack   user%foreign.example@local.example     (Sendmail-era routing)
//   bang-path      foreign.example!user@local.example      (UUCP routing)
//   quoted-at      "user@foreign.example"@local.example    (an @ inside the quoted local part)
//   source-route   @relay.example:user@foreign.example     (RFC 5321 §4.1.2 A-d-l, deprecated)
//   ip-literal     user@[192.0.2.1]                        (the domain is an address literal)
//   trailing-dot   user@local.example.                     (normalised away, still reported)
// Config keys read: none.
import { domainToASCII } from 'node:url';
import ipaddr from 'ipaddr.js';

export type AddressTrick = 'percent-hack' | 'bang-path' | 'quoted-at' | 'source-route' | 'ip-literal' | 'trailing-dot';

export interface ParsedAddress {
  /** Local part as written, quotes removed and quoted-pairs resolved. */
  local: string;
  /** Domain, lower-cased (NFC), without a trailing dot; for a literal: "[192.0.2.1]" or "[IPv6:2001:db8::1]". */
  domain: string;
  /** The domain in A-labels (IDNA, "xn--…"), for comparing with ASCII config; equals `domain` when ASCII or a literal. */
  domainAscii: string;
  /** local@domain in canonical form (quoted again when needed). */
  address: string;
  tricks: AddressTrick[];
}

export class AddressError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`${reason}: ${input}`);
    this.name = 'AddressError';
  }
}

/** RFC 5321 §4.5.3.1 size limits, in octets. */
export const LIMITS = { local: 64, domain: 255, label: 63, path: 256 } as const;

// RFC 5322 §3.2.3 atext, widened by RFC 6531 §3.3 to any UTF-8 beyond ASCII.
const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\u{10FFFF}]+$/u;
// RFC 5321 §4.1.2 sub-domain (Let-dig [Ldh-str]), RFC 6531 allows U-labels.
const LABEL = /^[a-z0-9\u0080-\u{10FFFF}](?:[a-z0-9\u0080-\u{10FFFF}-]*[a-z0-9\u0080-\u{10FFFF}])?$/u;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

const octets = (s: string) => Buffer.byteLength(s, 'utf8');

/**
 * Parses an envelope address as given in MAIL FROM / RCPT TO (angle brackets already removed by
 * smtp-server, but accepted if present). Throws AddressError on malformed input. The null
 * reverse-path "<>" is not an address: callers handle it before calling this.
 */
export function parseAddress(input: string): ParsedAddress {
  // One message's addresses are parsed at MAIL/RCPT, by the plugins, the router and delivery:
  // recent results are kept (a copy goes out, so a caller may change its own).
  const hit = recent.get(input);
  if (hit) return { ...hit, tricks: [...hit.tricks] };
  const parsed = parseUncached(input);
  if (recent.size >= RECENT_MAX) recent.clear();
  recent.set(input, parsed);
  return { ...parsed, tricks: [...parsed.tricks] };
}

const RECENT_MAX = 2000;
const recent = new Map<string, ParsedAddress>();

function parseUncached(input: string): ParsedAddress {
  let s = input.trim();
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1);
  if (CONTROL.test(s)) throw new AddressError(input, 'control character in the address');
  if (octets(s) > LIMITS.path) throw new AddressError(input, `address longer than ${LIMITS.path} octets`);
  const tricks: AddressTrick[] = [];
  // RFC 5321 §4.1.2: A-d-l ":" Mailbox; MUST be accepted, SHOULD be ignored (Appendix C).
  const route = /^(@[^:,@]+(?:,@[^:,@]+)*):(.*)$/.exec(s);
  if (route) {
    tricks.push('source-route');
    s = route[2]!;
  } else if (s.startsWith('@')) {
    throw new AddressError(input, 'malformed source route');
  }
  let local: string;
  let rest: string;
  if (s.startsWith('"')) {
    let i = 1;
    let out = '';
    let closed = false;
    for (; i < s.length; i++) {
      const ch = s[i]!;
      if (ch === '\\') {
        // quoted-pairSMTP = %d92 %d32-126 (RFC 5321 §4.1.2); RFC 6531 adds nothing here.
        const nx = s[i + 1];
        if (nx === undefined) break;
        out += nx;
        i++;
        continue;
      }
      if (ch === '"') {
        closed = true;
        break;
      }
      out += ch;
    }
    if (!closed) throw new AddressError(input, 'unterminated quoted local part');
    local = out;
    rest = s.slice(i + 1);
    if (!rest.startsWith('@')) throw new AddressError(input, 'expected @ after the quoted local part');
    rest = rest.slice(1);
    if (local.includes('@')) tricks.push('quoted-at');
  } else {
    const at = s.lastIndexOf('@');
    if (at <= 0) throw new AddressError(input, 'address must be local@domain');
    local = s.slice(0, at);
    rest = s.slice(at + 1);
    if (local.includes('@')) throw new AddressError(input, 'unquoted @ in the local part');
    if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) throw new AddressError(input, 'invalid dots in the local part');
    if (!local.split('.').every((atom) => ATEXT.test(atom))) throw new AddressError(input, 'invalid character in the local part');
  }
  if (local.length === 0) throw new AddressError(input, 'empty local part');
  if (octets(local) > LIMITS.local) throw new AddressError(input, `local part longer than ${LIMITS.local} octets`);
  if (local.includes('%')) tricks.push('percent-hack');
  if (local.includes('!')) tricks.push('bang-path');

  let domain: string;
  let domainAscii: string;
  if (rest.startsWith('[')) {
    domain = parseLiteral(input, rest);
    domainAscii = domain;
    tricks.push('ip-literal');
  } else {
    domain = rest.normalize('NFC').toLowerCase();
    if (domain.endsWith('.')) {
      tricks.push('trailing-dot');
      domain = domain.slice(0, -1);
    }
    if (!domain) throw new AddressError(input, 'empty domain');
    if (octets(domain) > LIMITS.domain) throw new AddressError(input, `domain longer than ${LIMITS.domain} octets`);
    const labels = domain.split('.');
    for (const l of labels) {
      if (!LABEL.test(l) || octets(l) > LIMITS.label) throw new AddressError(input, 'invalid domain');
    }
    domainAscii = /^[\x20-\x7e]*$/.test(domain) ? domain : domainToASCII(domain);
    // IDNA refuses some UTF-8 labels (disallowed code points, bad bidi): such a domain cannot exist.
    if (!domainAscii) throw new AddressError(input, 'invalid internationalised domain');
  }
  const shownLocal = local.split('.').every((atom) => ATEXT.test(atom)) ? local : `"${local.replace(/(["\\])/g, '\\$1')}"`;
  return { local, domain, domainAscii, address: `${shownLocal}@${domain}`, tricks };
}

/** RFC 5321 §4.1.3 address literals: "[192.0.2.1]" or "[IPv6:2001:db8::1]"; canonical form out. */
function parseLiteral(input: string, rest: string): string {
  if (!rest.endsWith(']')) throw new AddressError(input, 'unterminated address literal');
  const inner = rest.slice(1, -1);
  if (/^ipv6:/i.test(inner)) {
    const v6 = inner.slice(5);
    if (!ipaddr.IPv6.isValid(v6) || v6.includes('%')) throw new AddressError(input, 'invalid IPv6 address literal');
    return `[IPv6:${ipaddr.IPv6.parse(v6).toString()}]`;
  }
  // Four decimal octets, nothing looser (ipaddr's parser also takes "0x7f.1" and "127.1").
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(inner) || !ipaddr.IPv4.isValidFourPartDecimal(inner)) {
    throw new AddressError(input, 'invalid address literal');
  }
  return `[${inner.split('.').map(Number).join('.')}]`;
}

/** Domain part of an address, or null when it does not parse. */
/** True when the address needs SMTPUTF8 to travel (RFC 6531 §3.4): it holds a non-ASCII character. */
export function needsSmtputf8(address: string): boolean {
  return /[^\p{ASCII}]/u.test(address);
}

export function domainOf(address: string): string | null {
  try {
    return parseAddress(address).domain;
  } catch {
    return null;
  }
}
