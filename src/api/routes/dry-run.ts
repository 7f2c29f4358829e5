// POST /v1/test (read scope): the dry-run (../dry-run.ts). Returns what each recipient would hear
// and the trace of every plugin and Sieve rule that ran; nothing is queued or stored.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiContext } from '../context.js';
import { dryRun } from '../dry-run.js';
import { ApiProblem } from '../errors.js';
import { parseClient } from '../../address/cidr.js';
import { parseInput } from '../validate.js';

const body = z
  .object({
    envelope: z
      .object({
        client: z.string().refine((s) => parseClient(s) !== null, 'expected an IP address'),
        helo: z.string().min(1).max(255),
        from: z.string().max(998),
        to: z.array(z.string().min(1).max(998)).min(1).max(1000),
        auth: z.string().min(1).nullable().default(null),
      })
      .strict(),
    message: z.string().min(1),
  })
  .strict();

export function registerDryRunRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.post('/v1/test', { config: { scope: 'read' } }, async (req) => {
    const input = parseInput(body, req.body, 'body');
    if (!ctx.pipeline || !ctx.directory) throw new ApiProblem('unprocessable', 'this API instance has no plugin chain to run');
    return dryRun(input, { config: ctx.config, pipeline: ctx.pipeline, directory: ctx.directory, store: ctx.store });
  });
}
