// GET /v1/audit (admin scope): the change log (audit.ts), newest first, filterable by token
// name, resource prefix, action and time.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiContext } from '../context.js';
import { withEtag } from '../etag.js';
import { parseInput } from '../validate.js';

const query = z
  .object({
    token: z.string().min(1).optional(),
    resource: z.string().min(1).optional(),
    action: z.string().min(1).optional(),
    since: z.iso.datetime({ offset: true }).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

export function registerAuditRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get('/v1/audit', { config: { scope: 'admin' } }, async (req, reply) => {
    const q = parseInput(query, req.query, 'query');
    const since = q.since === undefined ? undefined : new Date(q.since).toISOString();
    return withEtag(reply, { entries: await ctx.audit.list({ ...q, ...(since ? { since } : {}) }) });
  });
}
