// /v1/policies/relay/rate-limits: rate-limit policies added at run time, on top of the
// rate-limit plugin's configured `limits` (src/policy/rate-limits.ts). A policy counts messages
// per client address, authenticated user or sender domain (at MAIL) or per recipient (at RCPT)
// in a sliding window; over `max`, the plugin answers 451 4.7.x (or 421 and closes). The plugin
// reads the store hash at every MAIL and RCPT, so a change applies to the next transaction on
// every node. The id is derived from `key` and `window`: a second policy for the same pair is a
// 409, and PUT may change `max` and `reply` but not what the id stands for (422).
// The rate-limit plugin must be in the chain (`plugins: [rate-limit]`) for policies to apply.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { duration } from '../../config/units.js';
import { POLICY_CHANNEL } from '../../policy/access.js';
import { humanWindow, RATE_LIMIT_KEYS, RATE_LIMITS_KEY, rateLimitId, type StoredRateLimit } from '../../policy/rate-limits.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const MAX_WINDOW = 30 * 86_400_000;

const policyBody = z
  .object({
    key: z.enum(RATE_LIMIT_KEYS),
    max: z.number().int().positive().max(1_000_000_000),
    window: duration().refine((ms) => ms >= 1000 && ms <= MAX_WINDOW, 'the window must be between 1s and 30d'),
    reply: z.union([z.literal(451), z.literal(421)]).default(451),
  })
  .strict();

const idParam = z.object({ id: z.string().regex(/^[0-9a-f]{12}$/, 'a policy id is 12 hex digits') });

/** The answer: the stored policy with its window also in words. */
const view = (p: StoredRateLimit) => ({ id: p.id, key: p.key, max: p.max, window: humanWindow(p.window_ms), window_ms: p.window_ms, reply: p.reply, updated_at: p.updated_at });

export function registerRateLimitRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const base = '/v1/policies/relay/rate-limits';
  const load = async (id: string): Promise<StoredRateLimit | null> => {
    const raw = await ctx.store.hget(RATE_LIMITS_KEY, id);
    return raw === null ? null : (JSON.parse(raw) as StoredRateLimit);
  };
  const etag = (p: StoredRateLimit) => etagOf(view(p));
  const save = async (p: StoredRateLimit, op: string) => {
    await ctx.store.hset(RATE_LIMITS_KEY, p.id, JSON.stringify(p));
    await ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op, key: RATE_LIMITS_KEY, id: p.id }));
  };
  const audit = (req: FastifyRequest, action: string, id: string, before: StoredRateLimit | null, after: StoredRateLimit | null) =>
    ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource: `policies/relay/rate-limits/${id}`, before: before && view(before), after: after && view(after) });

  app.get(base, { config: { scope: 'read' } }, async (_req, reply) => {
    const policies = Object.values(await ctx.store.hgetall(RATE_LIMITS_KEY))
      .map((raw) => view(JSON.parse(raw) as StoredRateLimit))
      .sort((a, b) => a.key.localeCompare(b.key) || a.window_ms - b.window_ms);
    return withEtag(reply, { policies });
  });

  app.post(base, { config: { scope: 'write' } }, async (req, reply) => {
    const b = parseInput(policyBody, req.body, 'body');
    const id = rateLimitId(b.key, b.window);
    const existing = await load(id);
    if (existing) throw new ApiProblem('conflict', `a ${b.key} policy per ${humanWindow(b.window)} exists already (id ${id}, max ${existing.max}); change it with PUT`);
    const p: StoredRateLimit = { id, key: b.key, max: b.max, window_ms: b.window, reply: b.reply, updated_at: new Date().toISOString() };
    await save(p, 'add');
    await audit(req, 'ratelimit.add', id, null, p);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'ratelimit.add', id, key: p.key, max: p.max, window: p.window_ms }, `rate limit ${p.key} ${p.max} per ${humanWindow(p.window_ms)} added`);
    void reply.header('etag', etag(p)).header('location', `${base}/${id}`);
    return reply.code(201).send(view(p));
  });

  app.get(`${base}/:id`, { config: { scope: 'read' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const p = await load(id);
    if (!p) throw notFound(`rate-limit policy ${id}`);
    return withEtag(reply, view(p));
  });

  app.put(`${base}/:id`, { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const b = parseInput(policyBody, req.body, 'body');
    const before = await load(id);
    checkPreconditions(req, before ? etag(before) : null);
    if (!before) throw notFound(`rate-limit policy ${id}`);
    if (rateLimitId(b.key, b.window) !== id) {
      throw new ApiProblem('unprocessable', `policy ${id} counts ${before.key} per ${humanWindow(before.window_ms)}; key and window cannot change (create another policy with POST)`);
    }
    const p: StoredRateLimit = { ...before, max: b.max, reply: b.reply, updated_at: new Date().toISOString() };
    await save(p, 'replace');
    await audit(req, 'ratelimit.replace', id, before, p);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'ratelimit.replace', id, max: p.max }, `rate limit ${id} changed`);
    void reply.header('etag', etag(p));
    return reply.code(200).send(view(p));
  });

  app.delete(`${base}/:id`, { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const before = await load(id);
    checkPreconditions(req, before ? etag(before) : null);
    if (!before) throw notFound(`rate-limit policy ${id}`);
    await ctx.store.hdel(RATE_LIMITS_KEY, id);
    await ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op: 'delete', key: RATE_LIMITS_KEY, id }));
    await audit(req, 'ratelimit.delete', id, before, null);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'ratelimit.delete', id }, `rate limit ${id} removed`);
    return reply.code(204).send();
  });
}
