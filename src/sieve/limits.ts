// Sieve resource limits in one place (RFC 5228 §2.10.6 allows an implementation to refuse a
// script or fail at run time on resource limits). Each limit says why it exists. The defaults
// follow Dovecot Pigeonhole where it has one. Config: `sieve.limits.max_redirects` overrides
// `maxRedirects` (CONTRACT.md); the others are code constants a caller may override per run.

export interface SieveLimits {
  /** Script source, in octets. Larger scripts are refused before parsing (memory, parse time). */
  maxScriptSize: number;
  /** Depth of nested blocks, test-lists and parentheses. Refused before parsing, so a script of
   *  10,000 nested blocks costs one linear scan and never recurses (no stack overflow). */
  maxNesting: number;
  /** Length of one string literal after unescaping. */
  maxStringLength: number;
  /** Final actions in one run (RFC 5228 §2.10.6). */
  maxActions: number;
  /** Distinct redirect actions (RFC 5228 §4.2 asks for a limit against mail loops/amplification). */
  maxRedirects: number;
  /** Nested include depth (RFC 6609 §3.2 asks for a limit), and includes per run. */
  maxIncludeDepth: number;
  maxIncludes: number;
  /** Commands and tests evaluated in one run, including included scripts and foreverypart. */
  maxSteps: number;
  /** Variables per script and the length of a variable's value (RFC 5229 §6). */
  maxVariables: number;
  maxVariableSize: number;
  /** Regular expressions (RFC 5228 ext. regex): pattern length, compiled program size, and the
   *  input length a pattern is run against. The engine (regex.ts) is a linear-time Pike VM, so
   *  time is O(program × input); these caps bound that product. */
  maxRegexLength: number;
  maxRegexProgram: number;
  maxMatchInput: number;
  /** MIME parts walked by body/foreverypart (RFC 5703), and their nesting. */
  maxMimeParts: number;
  maxMimeDepth: number;
}

export const DEFAULT_LIMITS: Readonly<SieveLimits> = Object.freeze({
  maxScriptSize: 1024 * 1024,
  maxNesting: 64,
  maxStringLength: 256 * 1024,
  maxActions: 32,
  maxRedirects: 4,
  maxIncludeDepth: 10,
  maxIncludes: 255,
  maxSteps: 100_000,
  maxVariables: 255,
  maxVariableSize: 4096,
  maxRegexLength: 1024,
  maxRegexProgram: 4096,
  maxMatchInput: 64 * 1024,
  maxMimeParts: 512,
  maxMimeDepth: 16,
});

export function resolveLimits(over?: Partial<SieveLimits>): SieveLimits {
  return { ...DEFAULT_LIMITS, ...(over ?? {}) };
}
