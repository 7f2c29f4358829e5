// ManageSieve command syntax (RFC 5804 §4): reads the tokens of one framed command (framing.ts).
//   command  = name *(SP argument) CRLF         names are case-insensitive atoms
//   argument = string / number
//   string   = quoted / literal-c2s             quoted: DQUOTE *1024QUOTED-CHAR DQUOTE, where
//                                               only DQUOTE and "\" may be escaped ("\" prefix)
//                                               literal-c2s: "{" number "+}" CRLF *OCTET (we also
//                                               take "{n}", which some clients send)
//   number   = 1*DIGIT, at most 4294967295
// Strings stay octets here; decodeUtf8() turns them into text where the RFC says UTF-8 (script
// names §1.6, scripts §2.6). Every problem is a ParseError whose message is fit for the client.
import type { Part } from './framing.js';
import { literalMarker } from './framing.js';
import { MAX_QUOTED } from './limits.js';

export type Token = { kind: 'atom'; value: string } | { kind: 'string'; value: Buffer } | { kind: 'number'; value: number };

export interface ParsedCommand {
  /** Upper-cased command name. */
  name: string;
  args: Token[];
}

export class ParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParseError';
  }
}

const SP = 0x20;
const TAB = 0x09;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const ATOM = /^[A-Za-z0-9_.-]+$/;

/** Every token of one command, literals in place. */
export function tokenize(parts: Part[]): Token[] {
  const tokens: Token[] = [];
  for (let p = 0; p < parts.length; p++) {
    const part = parts[p]!;
    if (part.kind === 'literal') throw new ParseError('Unexpected literal');
    const line = part.text;
    const marker = literalMarker(line);
    const end = marker ? line.lastIndexOf(0x7b /* { */) : line.length;
    let i = 0;
    // A literal's octets continue the same line: "... {5+}CRLF hello SP ..." (RFC 5804 §4).
    const needSpace = () => {
      if (i < end && line[i] !== SP && line[i] !== TAB) throw new ParseError('Missing space between arguments');
    };
    while (i < end) {
      const c = line[i]!;
      if (c === SP || c === TAB) {
        i++;
        continue;
      }
      if (c === DQUOTE) {
        const { value, next } = readQuoted(line, i, end);
        tokens.push({ kind: 'string', value });
        i = next;
        needSpace();
        continue;
      }
      let j = i;
      while (j < end && line[j] !== SP && line[j] !== TAB) j++;
      const word = line.subarray(i, j).toString('latin1');
      if (/^\d+$/.test(word)) {
        const n = word.length > 10 ? Infinity : Number(word);
        if (n > 0xffffffff) throw new ParseError('Number too large');
        tokens.push({ kind: 'number', value: n });
      } else if (ATOM.test(word)) {
        tokens.push({ kind: 'atom', value: word });
      } else {
        throw new ParseError('Invalid characters in command');
      }
      i = j;
    }
    if (marker) {
      const lit = parts[p + 1];
      if (lit?.kind !== 'literal') throw new ParseError('Missing literal');
      if (end > 0 && line[end - 1] !== SP && line[end - 1] !== TAB) throw new ParseError('Missing space before literal');
      tokens.push({ kind: 'string', value: lit.data });
      p++;
      // The text after the literal must start with a space or end the command.
      const after = parts[p + 1];
      if (after?.kind === 'text' && after.text.length > 0 && after.text[0] !== SP && after.text[0] !== TAB) {
        throw new ParseError('Missing space after literal');
      }
    }
  }
  return tokens;
}

function readQuoted(line: Buffer, start: number, end: number): { value: Buffer; next: number } {
  const out: number[] = [];
  for (let i = start + 1; i < end; i++) {
    const c = line[i]!;
    if (c === DQUOTE) {
      if (out.length > MAX_QUOTED) throw new ParseError(`Quoted string longer than ${MAX_QUOTED} octets; use a literal`);
      return { value: Buffer.from(out), next: i + 1 };
    }
    if (c === BACKSLASH) {
      const e = line[i + 1];
      if (e !== DQUOTE && e !== BACKSLASH) throw new ParseError('Invalid escape in quoted string');
      out.push(e);
      i++;
      continue;
    }
    if (c === 0 || c === 0x0d || c === 0x0a) throw new ParseError('Invalid character in quoted string');
    out.push(c);
  }
  throw new ParseError('Unterminated quoted string');
}

/** Splits one framed command into its name and arguments. */
export function parseCommand(parts: Part[]): ParsedCommand {
  const tokens = tokenize(parts);
  const first = tokens[0];
  if (!first) throw new ParseError('Empty command');
  if (first.kind !== 'atom') throw new ParseError('Expected a command name');
  return { name: first.value.toUpperCase(), args: tokens.slice(1) };
}

/** The client's answer to an AUTHENTICATE challenge: exactly one string (RFC 5804 §2.1). */
export function parseContinuation(parts: Part[]): Buffer {
  const tokens = tokenize(parts);
  const only = tokens[0];
  if (tokens.length !== 1 || only?.kind !== 'string') throw new ParseError('Expected one string');
  return only.value;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Strict UTF-8 (RFC 5804 §1.6 names, §2.6 scripts are UTF-8). */
export function decodeUtf8(b: Buffer, what: string): string {
  try {
    return utf8.decode(b);
  } catch {
    throw new ParseError(`${what} is not valid UTF-8`);
  }
}
