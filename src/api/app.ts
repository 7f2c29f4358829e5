// The REST API (fastify), described by openapi.yaml at the top of the repository; that file is
// the contract and is served as written at GET /openapi.yaml, with Swagger UI at /docs.
//
// Cross-cutting, in request order (onRequest, then the handler, then onResponse):
//   - rate limit per client address (api.rate_limit) for everything under /v1 → 429;
//   - bearer token (auth.ts) for routes that declare a `scope` → 401 / 403;
//   - body limit (api.body_limit) → 413; JSON bodies only → 415; bodies/params/query via zod → 400;
//   - every error as application/problem+json (errors.ts), never fastify's default shape;
//   - request count and latency for /metrics.
// Routes live in routes/<resource>.ts; each registers itself with the ApiContext.
//
// Config keys read: api.* (tokens, body_limit, rate_limit), sieve.limits (rule validation), the
// sieve plugin's `scripts` (the stage of each admin rule, gateway-files.ts).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { AuditLog } from './audit.js';
import { requireScope, TokenAuth } from './auth.js';
import type { ApiContext, ApiDeps } from './context.js';
import { ApiProblem, PROBLEM_CONTENT_TYPE, type ProblemKind } from './errors.js';
import { ApiMetrics } from './metrics.js';
import { RateLimiter } from './rate-limit.js';
import { GatewayFiles } from './gateway-files.js';
import { RuleRepository } from './rules-repository.js';
import { compileOptions } from '../sieve/config.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerRuleRoutes } from './routes/rules.js';
import { registerRelayRoutes } from './routes/relay.js';
import { registerTokenRoutes } from './routes/tokens.js';
import { registerAuditRoutes } from './routes/audit.js';
import { registerDryRunRoutes } from './routes/dry-run.js';
import { registerDirectoryRoutes } from './routes/directory.js';
import { registerUserSieveRoutes } from './routes/user-sieve.js';
import { registerQueueRoutes } from './routes/queue.js';
import { registerPolicyListRoutes } from './routes/policy-lists.js';
import { registerVerifyListRoutes } from './routes/verify-lists.js';
import { registerRelayRouteRoutes } from './routes/relay-routes.js';
import { registerRateLimitRoutes } from './routes/rate-limits.js';
import { registerDnsblRoutes } from './routes/dnsbl.js';

/** openapi.yaml: next to src/ under tsx, one level further up from dist/src after the build. */
export function openapiPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const p = join(here, up, 'openapi.yaml');
    if (existsSync(p)) return p;
  }
  throw new Error('openapi.yaml not found next to the build');
}

/** fastify's own error codes that reach the error handler, as problem kinds. */
const FASTIFY_ERRORS: Record<string, ProblemKind> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload-too-large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad-request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'bad-request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'bad-request',
  FST_ERR_VALIDATION: 'bad-request',
};

export interface BuiltApi {
  app: FastifyInstance;
  ctx: ApiContext;
  /** Every route served (method and URL template), HEAD and the Swagger UI's own under /docs aside. */
  routes: { method: string; url: string }[];
}

/** The admin rules, with the stages the sieve plugin runs them at after its own files. */
function ruleRepository({ config, store }: ApiDeps): RuleRepository {
  const files = GatewayFiles.fromConfig(config);
  return new RuleRepository(store, compileOptions(config.sieve), () => files.allEnvelopeOnly());
}

export async function buildApi(deps: ApiDeps): Promise<BuiltApi> {
  const { config, store } = deps;
  const ctx: ApiContext = {
    ...deps,
    auth: new TokenAuth(config.api.tokens, store),
    audit: new AuditLog(store),
    rules: ruleRepository(deps),
    metrics: new ApiMetrics(deps.queue),
  };
  const limiter = new RateLimiter(config.api.rate_limit.requests, config.api.rate_limit.per);
  const app = Fastify({
    logger: false,
    bodyLimit: config.api.body_limit,
    return503OnClosing: true,
  });

  // JSON bodies only: fastify's built-in text/plain parser would hand a string to the handlers.
  app.removeContentTypeParser('text/plain');
  const routes: BuiltApi['routes'] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD' && !r.url.startsWith('/docs')) routes.push({ method, url: r.url });
  });

  const spec = openapiPath();
  const specText = readFileSync(spec, 'utf8');
  await app.register(swagger, { mode: 'static', specification: { path: spec, baseDir: dirname(spec) } });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onRequest', async (req) => {
    if (req.url.startsWith('/v1/')) limiter.hit(req.ip);
    const scope = req.routeOptions.config.scope;
    if (!scope) return;
    req.principal = await ctx.auth.authenticate(req.headers.authorization);
    requireScope(req.principal, scope);
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    if (route.startsWith('/docs')) return;
    ctx.metrics.requests.inc({ method: req.method, route, status: String(reply.statusCode) });
    ctx.metrics.latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler(async (err: FastifyError | ApiProblem, req, reply) => {
    let problem: ApiProblem;
    if (err instanceof ApiProblem) problem = err;
    else if (err.code && FASTIFY_ERRORS[err.code]) problem = new ApiProblem(FASTIFY_ERRORS[err.code]!, err.message);
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) problem = new ApiProblem('bad-request', err.message);
    else {
      deps.log.error({ evt: 'api.error', err, method: req.method, url: req.url }, 'request failed');
      problem = new ApiProblem('internal', 'the request failed; see the server log');
    }
    for (const [k, v] of Object.entries(problem.extra.headers ?? {})) void reply.header(k, v);
    return reply.code(problem.status).type(PROBLEM_CONTENT_TYPE).send(problem.body(req.url.split('?')[0]));
  });
  app.setNotFoundHandler(async (req, reply) => {
    const p = new ApiProblem('not-found', `no route for ${req.method} ${req.url.split('?')[0]}`);
    return reply.code(404).type(PROBLEM_CONTENT_TYPE).send(p.body());
  });

  app.get('/openapi.yaml', async (_req, reply) => reply.type('application/yaml; charset=utf-8').send(specText));
  registerHealthRoutes(app, ctx);
  registerTokenRoutes(app, ctx);
  registerRuleRoutes(app, ctx);
  registerRelayRoutes(app, ctx);
  registerPolicyListRoutes(app, ctx);
  registerVerifyListRoutes(app, ctx);
  registerRelayRouteRoutes(app, ctx);
  registerRateLimitRoutes(app, ctx);
  registerDnsblRoutes(app, ctx);
  registerDirectoryRoutes(app, ctx);
  registerUserSieveRoutes(app, ctx);
  registerQueueRoutes(app, ctx);
  registerDryRunRoutes(app, ctx);
  registerAuditRoutes(app, ctx);

  app.addHook('onClose', async () => {
    ctx.rules.close();
    ctx.auth.close();
  });
  return { app, ctx, routes };
}
