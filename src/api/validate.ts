// Request bodies, path parameters and query strings are checked with zod; a failure is a 400
// problem listing each bad field as a JSON Pointer (RFC 6901) with its message.
import type { z } from 'zod';
import { ApiProblem } from './errors.js';

export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'path' | 'query'): z.infer<S> {
  const r = schema.safeParse(value ?? (where === 'body' ? undefined : {}));
  if (r.success) return r.data;
  const errors = r.error.issues.map((i) => ({
    pointer: `/${[where, ...i.path.map(String)].map((s) => s.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')}`,
    message: i.message,
  }));
  throw new ApiProblem('bad-request', `invalid ${where}: ${errors.map((e) => `${e.pointer}: ${e.message}`).join('; ')}`, { errors });
}
