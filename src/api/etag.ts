// Optimistic concurrency (RFC 9110 §8.8.3, §13.1.1): every resource answers with a strong ETag
// computed from its representation; PUT and DELETE honour If-Match (412 when it names another
// version, or when the resource does not exist) and If-None-Match: * (412 when it exists).
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiProblem } from './errors.js';

export function etagOf(value: unknown): string {
  return `"${createHash('sha256').update(JSON.stringify(value)).digest('base64url').slice(0, 27)}"`;
}

/** Throws 412 when the request's preconditions do not hold for `current` (null: absent). */
export function checkPreconditions(req: FastifyRequest, current: string | null): void {
  const ifMatch = header(req, 'if-match');
  if (ifMatch !== undefined) {
    const tags = ifMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
    if (current === null) throw new ApiProblem('precondition-failed', 'If-Match was given but the resource does not exist');
    if (!tags.includes('*') && !tags.includes(current)) throw new ApiProblem('precondition-failed', `If-Match ${ifMatch} does not match the current ETag ${current}`);
  }
  const ifNoneMatch = header(req, 'if-none-match');
  if (ifNoneMatch !== undefined && current !== null) {
    const tags = ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
    if (tags.includes('*') || tags.includes(current)) throw new ApiProblem('precondition-failed', 'If-None-Match: the resource exists');
  }
}

export function withEtag<T>(reply: FastifyReply, value: T): T {
  void reply.header('etag', etagOf(value));
  return value;
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}
