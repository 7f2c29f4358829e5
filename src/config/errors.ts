// Config problems, each with its key path ("listen.smtp.port: expected number, received string").
import type { z } from 'zod';

export interface ConfigProblem {
  /** Dotted key path; '' for the file as a whole. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatProblem(p: ConfigProblem): string {
  return p.path ? `${p.path}: ${p.message}` : p.message;
}

export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix: (string | number)[] = []): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path.map((k) => (typeof k === 'symbol' ? String(k) : k))];
    // A union whose every branch failed: report the branch errors when there is one clear branch.
    if (issue.code === 'invalid_union' && 'errors' in issue && issue.errors.length) {
      const branches = issue.errors as z.core.$ZodIssue[][];
      const best = branches.reduce((a, b) => (b.length && (a.length === 0 || b.length < a.length) ? b : a), [] as z.core.$ZodIssue[]);
      if (best.length) {
        out.push(...formatIssues(best, path));
        continue;
      }
    }
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out.push({ path: [...path, k].join('.'), message: 'unknown key' });
      continue;
    }
    out.push({ path: path.join('.'), message: issue.message });
  }
  return out;
}
