// Comparators (RFC 4790 §9: i;octet, i;ascii-casemap, i;ascii-numeric), match types
// (RFC 5228 §2.7.1: :is, :contains, :matches; regex extension: :regex) and relational match
// types (RFC 5231: :count and :value with gt/ge/lt/le/eq/ne). :matches and :regex run on the
// linear-time engine in regex.ts; compiled patterns are cached. Match variables (RFC 5229 §3.2)
// come back through `onMatch`.
import type { SieveLimits } from './limits.js';
import { compileGlob, compileRegex, execProgram, type Program } from './regex.js';

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
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
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
 * successful :matches/:regex comparison (RFC 5229 §3.2).
 */
export function matchValues(spec: MatchSpec, values: string[], keys: string[], limits: SieveLimits, onMatch?: (groups: string[]) => void): boolean {
  if (spec.type === 'count') {
    const n = String(values.length);
    return keys.some((k) => relation(spec.rel ?? 'eq', compare(spec.comparator, n, k)));
  }
  for (const v of values) {
    for (const k of keys) {
      const r = matchOne(spec, v, k, limits);
      if (r === false) continue;
      if (Array.isArray(r) && onMatch) onMatch(r);
      return true;
    }
  }
  return false;
}
