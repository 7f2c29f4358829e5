// Config problems, each with its key path and, when it came from a file, its line and column:
//   postern.yaml:3:11: listen.smtp.port: expected number, received string
// `configErrorMap` rewrites zod's default messages into short ones that name YAML's words
// (map, list) and say what was received; schema-level messages (regex hints, refinements) win
// over it. `formatIssues` flattens unions and unknown keys so that each problem names one key.
import type { z } from 'zod';

export interface ConfigProblem {
  /** Dotted key path ("listen.smtp.port", "plugins.0"); '' for the file as a whole. */
  path: string;
  message: string;
  /** 1-based position in the file, when known. */
  line?: number;
  column?: number;
}

export class ConfigError extends Error {
  constructor(
    readonly problems: ConfigProblem[],
    /** The file the problems are about, as the user should see it; null for the built-in defaults. */
    readonly file: string | null = null,
  ) {
    super(problems.map((p) => formatProblem(p, file)).join('\n'));
    this.name = 'ConfigError';
  }
}

/** `FILE:LINE:COL: key.path: message`, leaving out whatever is unknown. */
export function formatProblem(p: ConfigProblem, file?: string | null): string {
  let where = '';
  if (file && p.line !== undefined) where = `${file}:${p.line}:${p.column ?? 1}: `;
  else if (file) where = `${file}: `;
  else if (p.line !== undefined) where = `line ${p.line}, column ${p.column ?? 1}: `;
  return `${where}${p.path ? `${p.path}: ` : ''}${p.message}`;
}

/** A key path as printed: segments joined with '.', a key that itself holds a '.' quoted. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((k) => {
      const s = typeof k === 'symbol' ? String(k) : String(k);
      return /[.\s"]/.test(s) || s === '' ? JSON.stringify(s) : s;
    })
    .join('.');
}

/** The inverse of formatPath ("routes.\"a.example\".mode" → ['routes', 'a.example', 'mode']). */
export function parsePath(dotted: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|([^.]+)/g;
  for (let m = re.exec(dotted); m; m = re.exec(dotted)) {
    if (m[1] !== undefined) out.push(JSON.parse(`"${m[1]}"`) as string);
    else out.push(/^\d+$/.test(m[2]!) ? Number(m[2]) : m[2]!);
  }
  return out;
}

/** Where a raw key path sits in the source; undefined when unknown. */
export type Locate = (path: readonly PropertyKey[]) => { line: number; column: number } | undefined;

/** YAML users think in maps and lists; zod speaks of objects, records and arrays. */
const TYPE_WORDS: Record<string, string> = { object: 'map', record: 'map', array: 'list', int: 'integer', tuple: 'list' };

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'object') return 'map';
  if (typeof v === 'number' && !Number.isInteger(v)) return String(v);
  return typeof v;
}

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/**
 * Per-parse error map (`schema.safeParse(raw, { error: configErrorMap })`). Returns undefined for
 * issues it has nothing better to say about, so zod's own message stays.
 */
export const configErrorMap: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'required';
      const expected = TYPE_WORDS[issue.expected] ?? issue.expected;
      return `expected ${expected}, received ${typeOf(issue.input)}`;
    }
    case 'too_small': {
      const n = Number(issue.minimum);
      if ((issue.origin === 'string' || issue.origin === 'array') && n === 1) return 'must not be empty';
      if (issue.origin === 'string') return `must be at least ${n} characters long`;
      if (issue.origin === 'array') return `must have at least ${n} entries`;
      return `must be ${issue.inclusive === false ? '>' : '>='} ${n}`;
    }
    case 'too_big': {
      const n = Number(issue.maximum);
      if (issue.origin === 'string') return `must be at most ${n} characters long`;
      if (issue.origin === 'array') return `must have at most ${n} entries`;
      return `must be ${issue.inclusive === false ? '<' : '<='} ${n}`;
    }
    case 'invalid_value': {
      const values = issue.values.map(show);
      const expected = values.length === 1 ? values[0] : `one of ${values.join(', ')}`;
      return `expected ${expected}, received ${show(issue.input)}`;
    }
    case 'invalid_union':
      // A discriminated union whose tag is missing or unknown (store.driver).
      if (issue.discriminator && 'options' in issue && Array.isArray(issue.options)) {
        const options = issue.options as unknown[];
        const input = issue.input as Record<string, unknown> | undefined;
        const got = input && typeof input === 'object' ? input[issue.discriminator] : undefined;
        const opts = options.map(show).join(', ');
        return got === undefined ? `required (one of ${opts})` : `expected one of ${opts}, received ${show(got)}`;
      }
      return undefined;
    case 'invalid_format':
      if (issue.format === 'regex' && issue.pattern) return `does not match ${issue.pattern}`;
      return `expected a valid ${issue.format}`;
    default:
      return undefined;
  }
};

/**
 * Parse options for any schema that checks config text (plugin options too):
 * `schema.safeParse(raw, CONFIG_PARSE)`, then `formatIssues(result.error.issues, prefix)`.
 */
export const CONFIG_PARSE = { error: configErrorMap, reportInput: true } as const;

type Issue = z.core.$ZodIssue;

/** A branch failed on the value's type at its own root: the value was meant for another branch. */
const wrongShape = (branch: Issue[]) => branch.some((i) => i.path.length === 0 && i.code === 'invalid_type');

/**
 * Turns zod issues into problems, one per key. `prefix` is the path of the value that was
 * parsed; `locate` maps a raw path to a line and column; `suggest` names a known key near an
 * unknown one.
 */
export function formatIssues(
  issues: readonly Issue[],
  prefix: readonly PropertyKey[] = [],
  locate?: Locate,
  suggest?: (path: readonly PropertyKey[], key: string) => string | undefined,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const push = (path: readonly PropertyKey[], message: string) => {
    const pos = locate?.(path);
    out.push({ path: formatPath(path), message, ...(pos ? { line: pos.line, column: pos.column } : {}) });
  };
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length) {
      const branches = issue.errors.filter((b) => b.length > 0);
      // The branches that accepted the value's shape and failed deeper say what is wrong; among
      // them, the one with the fewest issues is the nearest miss.
      const near = branches.filter((b) => !wrongShape(b));
      if (near.length) {
        const best = near.reduce((a, b) => (b.length < a.length ? b : a));
        out.push(...formatIssues(best, path, locate, suggest));
        continue;
      }
      // Every branch refused the type: say which types would do.
      const expected = [...new Set(branches.flatMap((b) => b.filter((i) => i.code === 'invalid_type').map((i) => TYPE_WORDS[i.expected] ?? i.expected)))];
      if (expected.length) {
        // `input` is there when the parse ran with reportInput (load.ts does).
        const got = 'input' in issue ? `, received ${typeOf(issue.input)}` : '';
        push(path, issue.input === undefined && 'input' in issue ? 'required' : `expected ${expected.join(' or ')}${got}`);
        continue;
      }
    }
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) {
        const near = suggest?.(path, k);
        push([...path, k], near ? `unknown key (did you mean "${near}"?)` : 'unknown key');
      }
      continue;
    }
    // Parsed without configErrorMap: zod's own words, less its boilerplate.
    push(path, issue.message.replace(/^Invalid input: /, ''));
  }
  return out;
}

/** File order: located problems by line and column, the rest after them in the order found. */
export function sortProblems(problems: ConfigProblem[]): ConfigProblem[] {
  const key = (p: ConfigProblem) => (p.line === undefined ? Number.MAX_SAFE_INTEGER : p.line * 1e6 + (p.column ?? 0));
  return problems.map((p, i) => ({ p, i })).sort((a, b) => key(a.p) - key(b.p) || a.i - b.i).map((x) => x.p);
}
