// Envelope address parsing (RFC 5321 §4.1.2 Mailbox, RFC 6531 for UTF-8) and the checks that
// keep relay decisions honest. This module decides what the domain of an address IS; routing and
// relay control must use it rather than split strings themselves.
//
// The tricks an open-relay probe uses are reported in `tricks`; relay-acl treats an address with
// any trick as foreign:
//   percent-hack   user%foreign.example@local.example     (Sendmail-era routing)
//   bang-path      foreign.example!user@local.example      (UUCP routing)
//   quoted-at      "user@foreign.example"@local.example    (an @ inside the quoted local part)
//   source-route   @relay.example:user@foreign.example     (RFC 5321 §4.1.2 A-d-l, deprecated)
//   ip-literal     user@[192.0.2.1]                        (the domain is an address literal)
//   trailing-dot   user@local.example.                     (normalised away, still reported)

export type AddressTrick = 'percent-hack' | 'bang-path' | 'quoted-at' | 'source-route' | 'ip-literal' | 'trailing-dot';

export interface ParsedAddress {
  /** Local part as written, quotes removed and quoted-pairs resolved. */
  local: string;
  /** Domain, lower-cased, without a trailing dot; for a literal: "[192.0.2.1]". */
  domain: string;
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

/**
 * Parses an envelope address as given in MAIL FROM / RCPT TO (angle brackets already removed by
 * smtp-server, but accepted if present). Throws AddressError on malformed input.
 */
export function parseAddress(input: string): ParsedAddress {
  let s = input.trim();
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1);
  const tricks: AddressTrick[] = [];
  // RFC 5321 §4.1.2: A-d-l ":" Mailbox; MUST be accepted, SHOULD be ignored (Appendix C).
  const route = /^(@[^:,]+(?:,@[^:,]+)*):(.*)$/.exec(s);
  if (route) {
    tricks.push('source-route');
    s = route[2]!;
  }
  let local: string;
  let rest: string;
  if (s.startsWith('"')) {
    let i = 1;
    let out = '';
    for (; i < s.length; i++) {
      const ch = s[i]!;
      if (ch === '\\' && i + 1 < s.length) {
        out += s[++i];
        continue;
      }
      if (ch === '"') break;
      out += ch;
    }
    if (i >= s.length) throw new AddressError(input, 'unterminated quoted local part');
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
    if (/[\s<>(),;:\\"[\]]/.test(local)) throw new AddressError(input, 'invalid character in the local part');
    if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) throw new AddressError(input, 'invalid dots in the local part');
  }
  if (local.length === 0) throw new AddressError(input, 'empty local part');
  if (local.includes('%')) tricks.push('percent-hack');
  if (local.includes('!')) tricks.push('bang-path');
  let domain = rest.toLowerCase();
  if (domain.startsWith('[')) {
    if (!domain.endsWith(']')) throw new AddressError(input, 'unterminated address literal');
    tricks.push('ip-literal');
  } else {
    if (domain.endsWith('.')) {
      tricks.push('trailing-dot');
      domain = domain.replace(/\.+$/, '');
    }
    if (!domain || domain.startsWith('.') || domain.includes('..') || /[\s@<>()[\]\\,;:"]/.test(domain)) {
      throw new AddressError(input, 'invalid domain');
    }
  }
  const needsQuotes = /[\s<>(),;:\\"[\]@]/.test(local) || local.startsWith('.') || local.endsWith('.') || local.includes('..');
  const shownLocal = needsQuotes ? `"${local.replace(/(["\\])/g, '\\$1')}"` : local;
  return { local, domain, address: `${shownLocal}@${domain}`, tricks };
}

/** Domain part of an address, or null when it does not parse. */
export function domainOf(address: string): string | null {
  try {
    return parseAddress(address).domain;
  } catch {
    return null;
  }
}
