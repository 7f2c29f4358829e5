// GET /healthz (the process answers), GET /readyz (the store answers within a second; 503
// "degraded" otherwise), GET /metrics (Prometheus text): no token needed (CONTRACT.md).
// GET /v1/stats (read scope): per-plugin and per-rule counts as JSON.
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { gatewayStats } from '../metrics.js';

const STORE_TIMEOUT_MS = 1000;

export function registerHealthRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    let timer: NodeJS.Timeout | undefined;
    const problem = await Promise.race([
      ctx.store.get('api:readyz').then(
        () => null,
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      ),
      new Promise<string>((r) => (timer = setTimeout(() => r(`no answer within ${STORE_TIMEOUT_MS}ms`), STORE_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    if (problem === null) return { status: 'ready', checks: { store: 'ok' } };
    return reply.code(503).send({ status: 'degraded', checks: { store: 'unreachable' }, detail: problem });
  });

  // Per-plugin and per-rule counts of this process since it started (the trace of every
  // transaction that reached the end of DATA); /metrics has the same as Prometheus series.
  app.get('/v1/stats', { config: { scope: 'read' } }, async () => gatewayStats());

  app.get('/metrics', async (_req, reply) => reply.type(ctx.metrics.contentType()).send(await ctx.metrics.text()));
}
