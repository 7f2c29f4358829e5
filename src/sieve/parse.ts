// Parses Sieve text (RFC 5228 §2, §8) into the AST with the generated peggy parser, after two
// cheap guards from limits.ts: script size and nesting depth. The nesting scan follows the same
// lexical rules as the grammar (strings, multi-line strings, comments) but never recurses, so a
// script of 10,000 nested blocks is refused in linear time before the recursive-descent parser
// could exhaust the stack.
import type { ScriptNode, SieveError } from './ast.js';
import type { SieveLimits } from './limits.js';
import { parse as peggyParse, SyntaxError as PeggySyntaxError } from './parser.generated.js';

export type ParseResult = { ok: true; ast: ScriptNode } | { ok: false; errors: SieveError[] };

interface PeggyLocation {
  start: { line: number; column: number; offset: number };
}
interface PeggyError {
  message: string;
  location?: PeggyLocation;
  found?: string | null;
}

/** Line and column (1-based) of an offset. */
export function positionOf(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let col = 1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      col = 1;
    } else col++;
  }
  return { line, column: col };
}

/** Returns the offset where nesting first exceeds `max`, or -1. */
export function scanNesting(text: string, max: number): number {
  let depth = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      continue;
    }
    if (c === '"') {
      i++;
      while (i < n && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      continue;
    }
    if ((c === 't' || c === 'T') && /^text:/i.test(text.slice(i, i + 5)) && !/[A-Za-z0-9_]/.test(text[i - 1] ?? '')) {
      // Multi-line string: runs to a line holding only ".".
      const m = /\r?\n\.\r?\n/.exec(text.slice(i));
      i = m ? i + m.index + m[0].length : n;
      continue;
    }
    if (c === '{' || c === '(' || c === '[') {
      depth++;
      if (depth > max) return i;
    } else if (c === '}' || c === ')' || c === ']') depth--;
    i++;
  }
  return -1;
}

function describeFound(found: string | null | undefined): string {
  if (found === null || found === undefined) return 'end of script';
  if (found === '\n' || found === '\r') return 'end of line';
  return JSON.stringify(found);
}

export function parseScript(text: string, limits: SieveLimits): ParseResult {
  if (Buffer.byteLength(text, 'utf8') > limits.maxScriptSize) {
    return { ok: false, errors: [{ line: 1, column: 1, message: `script too large (limit ${limits.maxScriptSize} octets)` }] };
  }
  const deep = scanNesting(text, limits.maxNesting);
  if (deep >= 0) {
    const p = positionOf(text, deep);
    return { ok: false, errors: [{ ...p, message: `blocks nested too deeply (limit ${limits.maxNesting})` }] };
  }
  try {
    return { ok: true, ast: peggyParse(text, {}) as ScriptNode };
  } catch (e) {
    if (e instanceof PeggySyntaxError) {
      const pe = e as unknown as PeggyError;
      const loc = pe.location?.start ?? { line: 1, column: 1, offset: 0 };
      return { ok: false, errors: [{ line: loc.line, column: loc.column, message: syntaxMessage(text, pe) }] };
    }
    if (e instanceof RangeError) {
      return { ok: false, errors: [{ line: 1, column: 1, message: 'script too complex to parse' }] };
    }
    throw e;
  }
}

function syntaxMessage(text: string, e: PeggyError): string {
  const off = e.location?.start.offset ?? 0;
  const rest = text.slice(off);
  if (e.found === null || e.found === undefined) {
    if (/"[^"]*$/.test(text) && (text.match(/(?<!\\)"/g)?.length ?? 0) % 2 === 1) return 'unterminated string';
    if (/text:/i.test(text)) return 'syntax error: unexpected end of script (unterminated block, string or text: literal?)';
    return 'syntax error: unexpected end of script (missing ";" or "}"?)';
  }
  if (rest.startsWith('/*')) return 'unterminated bracket comment';
  if (rest.startsWith('"') && !/^"(?:[^"\\]|\\.)*"/s.test(rest)) return 'unterminated string';
  if (/^text:/i.test(rest) || (rest.startsWith(':') && /(^|[^A-Za-z0-9_])text$/i.test(text.slice(0, off)))) return 'multi-line string (text:) must be followed by a line break and end with a line holding only "."';
  // Peggy's "Expected …" list, kept short.
  const m = /^Expected (.*) but (.*) found\.$/.exec(e.message);
  // Whitespace and comments may appear anywhere, so they are noise in the list.
  const noise = new Set(['"#"', '"/*"', '[ \\t\\r\\n]', 'bracket comment', '"\\r\\n"', '"\\n"', 'end of input']);
  const expected = m ? m[1]!.split(/, (?:or )?| or /).filter((x) => !noise.has(x)).join(', ') : e.message;
  return `syntax error: expected ${expected || 'a command'} but found ${describeFound(e.found)}`;
}
