// Comparators (RFC 4790 §9: i;octet, i;ascii-casemap, i;ascii-numeric), match types
// (RFC 5228 §2.7.1: :is, :contains, :matches; regex extension: :regex) and relational match
// types (RFC 5231: :count and :value with gt/ge/lt/le/eq/ne). :matches and :regex run on the
// linear-time engine in regex.ts; compiled patterns are cached. Match variables (RFC 5229 §3.2)
// come back through `onMatch`.
import type { SieveLimits } from './limits.js';
import { compileGlob, compileRegex, execProgram, RegexError, type Program } from './regex.js';

export type MatchType = 'is' | 'contains' | 'matches' | 'regex' | 'count' | 'value';
export type RelOp = 'gt' | 'ge' | 'lt' | 'le' | 'eq' | 'ne';
export const REL_OPS: readonly RelOp[] = ['gt', 'ge', 'lt', 'le', 'eq', 'ne'];
export const COMPARATORS = ['i;octet', 'i;ascii-casemap', 'i;ascii-numeric'] as const;
export type Comparator = (typeof COMPARATORS)[number];

export interface MatchSpec {
  type: MatchType;
  rel?: RelOp;
  comparator: Comparator;
}

/** RFC 4790 §9.2: only ASCII letters fold. */
export function asciiLower(s: string): string {
  // A long value (a body) is often folded by several tests in a row: remember the last one.
  if (s.length >= 1024) {
    if (s !== lastLongIn) {
      lastLongIn = s;
      lastLongOut = foldAscii(s);
    }
    return lastLongOut;
  }
  return foldAscii(s);
}

let lastLongIn = '';
let lastLongOut = '';

function foldAscii(s: string): string {
  // Most values have no upper-case letter at all: return them without a copy.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  }
  return s;
}

/** RFC 4790 §9.1: leading digits; no leading digit means positive infinity. */
function numericKey(s: string): string | null {
  const m = /^[0-9]+/.exec(s);
  if (!m) return null;
  return m[0].replace(/^0+(?=.)/, '');
}

function compareNumeric(a: string, b: string): number {
  const x = numericKey(a);
  const y = numericKey(b);
  if (x === null && y === null) return 0;
  if (x === null) return 1;
  if (y === null) return -1;
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

export function compare(comp: Comparator, a: string, b: string): number {
  if (comp === 'i;ascii-numeric') return compareNumeric(a, b);
  if (comp === 'i;ascii-casemap') {
    a = asciiLower(a);
    b = asciiLower(b);
  }
  // Octet order of the UTF-8 encoding.
  return Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

export function relation(op: RelOp, ord: number): boolean {
  switch (op) {
    case 'gt':
      return ord > 0;
    case 'ge':
      return ord >= 0;
    case 'lt':
      return ord < 0;
    case 'le':
      return ord <= 0;
    case 'eq':
      return ord === 0;
    case 'ne':
      return ord !== 0;
  }
}

const programCache = new Map<string, Program>();
const CACHE_MAX = 2048;

/** Compiles (cached) a :matches or :regex key. Throws RegexError for an invalid regex. */
export function program(type: 'matches' | 'regex', key: string, comp: Comparator, limits: SieveLimits): Program {
  const ci = comp === 'i;ascii-casemap';
  const ck = `${type}\0${ci ? 1 : 0}\0${key}`;
  let p = programCache.get(ck);
  if (!p) {
    p =
      type === 'regex'
        ? compileRegex(key, { caseInsensitive: ci, maxLength: limits.maxRegexLength, maxProgram: limits.maxRegexProgram })
        : compileGlob(key, { caseInsensitive: ci, maxProgram: limits.maxRegexProgram });
    if (programCache.size >= CACHE_MAX) programCache.clear();
    programCache.set(ck, p);
  }
  return p;
}

/**
 * A key list made ready for matching: keys folded once for i;ascii-casemap, :matches/:regex
 * programs compiled once (a key that does not compile keeps its RegexError, thrown when the key
 * is reached, as an uncompiled key would). Built at compile time for literal key lists
 * (validate/match.ts) and remembered per test node for keys built from variables.
 */
export interface PreparedKeys {
  keys: string[];
  folded: string[];
  programs: (Program | RegexError)[] | null;
}

export function prepareKeys(spec: MatchSpec, keys: string[], limits: SieveLimits): PreparedKeys {
  const folded = spec.comparator === 'i;ascii-casemap' ? keys.map(asciiLower) : keys;
  let programs: (Program | RegexError)[] | null = null;
  if (spec.type === 'matches' || spec.type === 'regex') {
    const type = spec.type;
    programs = keys.map((k) => {
      try {
        return program(type, k, spec.comparator, limits);
      } catch (e) {
        if (e instanceof RegexError) return e;
        throw e;
      }
    });
  }
  return { keys, folded, programs };
}

/** True when `p` was prepared for exactly these keys (same strings, same order). */
export function preparedFor(p: PreparedKeys | undefined, keys: string[]): p is PreparedKeys {
  if (!p || p.keys.length !== keys.length) return false;
  for (let i = 0; i < keys.length; i++) if (p.keys[i] !== keys[i]) return false;
  return true;
}

/** One value against one key for :is, :contains, :matches, :regex and :value. */
export function matchOne(spec: MatchSpec, value: string, key: string, limits: SieveLimits): string[] | boolean {
  switch (spec.type) {
    case 'is':
      return compare(spec.comparator, value, key) === 0;
    case 'contains':
      return spec.comparator === 'i;ascii-casemap' ? asciiLower(value).includes(asciiLower(key)) : value.includes(key);
    case 'value':
      return relation(spec.rel ?? 'eq', compare(spec.comparator, value, key));
    case 'matches':
    case 'regex': {
      // Inputs are capped so a run is bounded (limits.ts, maxMatchInput).
      const v = value.length > limits.maxMatchInput ? value.slice(0, limits.maxMatchInput) : value;
      const m = execProgram(program(spec.type, key, spec.comparator, limits), v);
      return m ?? false;
    }
    case 'count':
      return false;
  }
}

/**
 * RFC 5228 §2.7: true when any value matches any key. For :count (RFC 5231 §4.1) the number of
 * values is compared with each key. `onMatch` receives the match groups of the first
 * successful :matches/:regex comparison (RFC 5229 §3.2). `prepared` (prepareKeys for these
 * keys) saves folding and compiling the keys again.
 */
export function matchValues(spec: MatchSpec, values: string[], keys: string[], limits: SieveLimits, onMatch?: (groups: string[]) => void, prepared?: PreparedKeys): boolean {
  if (spec.type === 'count') {
    const n = String(values.length);
    return keys.some((k) => relation(spec.rel ?? 'eq', compare(spec.comparator, n, k)));
  }
  if (values.length === 0 || keys.length === 0) return false;
  const p = preparedFor(prepared, keys) ? prepared : prepareKeys(spec, keys, limits);
  const casemap = spec.comparator === 'i;ascii-casemap';
  for (const v of values) {
    switch (spec.type) {
      case 'is': {
        if (spec.comparator === 'i;ascii-numeric') {
          for (const k of keys) if (compareNumeric(v, k) === 0) return true;
          break;
        }
        // Equal strings are equal octets (the comparison compares UTF-8 encodings).
        const fv = casemap ? asciiLower(v) : v;
        for (const k of p.folded) if (fv === k) return true;
        break;
      }
      case 'contains': {
        const fv = casemap ? asciiLower(v) : v;
        for (const k of p.folded) if (fv.includes(k)) return true;
        break;
      }
      case 'value':
        for (const k of keys) if (relation(spec.rel ?? 'eq', compare(spec.comparator, v, k))) return true;
        break;
      case 'matches':
      case 'regex': {
        // Inputs are capped so a run is bounded (limits.ts, maxMatchInput).
        const input = v.length > limits.maxMatchInput ? v.slice(0, limits.maxMatchInput) : v;
        for (const prog of p.programs!) {
          if (prog instanceof RegexError) throw prog;
          const m = execProgram(prog, input);
          if (m === null) continue;
          onMatch?.(m);
          return true;
        }
        break;
      }
    }
  }
  return false;
}
