// compile(text) → validated script or `line:column: message` errors. Runs the parser
// (grammar.peggy via parse.ts) and then the validation passes in order: require (RFC 5228 §3.2),
// build (known commands/tests/tags, argument shapes), match (comparators, match types,
// relational, regex), extension checks. Errors from all passes are reported together, sorted.
import type { SieveError } from './ast.js';
import { defaultRegistry } from './extensions/index.js';
import { resolveLimits, type SieveLimits } from './limits.js';
import { parseScript } from './parse.js';
import type { CNode, Registry, ValidateCtx } from './registry.js';
import { buildPass } from './validate/build.js';
import { extensionChecksPass } from './validate/checks.js';
import { matchPass } from './validate/match.js';
import { requirePass } from './validate/require.js';

export interface CompileOptions {
  limits?: Partial<SieveLimits>;
  registry?: Registry;
  /** Capabilities a site allows; default: every capability the registry knows. */
  extensions?: string[];
}

export interface CompiledScript {
  commands: CNode[];
  required: Set<string>;
  registry: Registry;
  limits: SieveLimits;
}

export type CompileResult = { ok: true; script: CompiledScript } | { ok: false; errors: SieveError[] };

export function compile(text: string, opts: CompileOptions = {}): CompileResult {
  const limits = resolveLimits(opts.limits);
  const registry = opts.registry ?? defaultRegistry();
  const parsed = parseScript(text, limits);
  if (!parsed.ok) return parsed;
  const errors: SieveError[] = [];
  const report = (message: string, loc: { start: { line: number; column: number } }) =>
    errors.push({ line: loc.start.line, column: loc.start.column, message });
  const enabled = opts.extensions ? new Set(opts.extensions.map((e) => e.toLowerCase())) : undefined;
  const required = requirePass(parsed.ast, registry, enabled, report);
  const v: ValidateCtx = { required, limits, registry, report, has: (c) => required.has(c) };
  const commands = buildPass(parsed.ast.commands, v);
  matchPass(commands, v);
  extensionChecksPass(commands, v);
  if (errors.length > 0) {
    const seen = new Set<string>();
    const sorted = errors
      .sort((a, b) => a.line - b.line || a.column - b.column)
      .filter((e) => {
        const k = `${e.line}:${e.column}:${e.message}`;
        if (seen.has(k)) return false;
        seen.add(k);
        return true;
      });
    return { ok: false, errors: sorted };
  }
  return { ok: true, script: { commands, required, registry, limits } };
}
