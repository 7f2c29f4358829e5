// /v1/tokens (admin scope): bearer tokens created at run time, kept in the store (auth.ts). The
// secret is returned once, by the POST that makes it; the store keeps only its sha256.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { hashToken, newTokenSecret, TOKENS_CHANNEL, TOKENS_KEY, type StoredToken } from '../auth.js';
import { SCOPES } from '../config.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const createBody = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" and "-", at most 64'),
    scopes: z.array(z.enum(SCOPES)).min(1),
  })
  .strict();
const idParam = z.object({ id: z.string().regex(/^[0-9a-f]{16}$/, 'a token id is 16 hex digits') });

export const publicToken = (t: StoredToken) => ({ id: t.id, name: t.name, scopes: t.scopes, created_at: t.created_at, created_by: t.created_by });

export function registerTokenRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const load = async (id: string) => {
    const raw = await ctx.store.hget(TOKENS_KEY, id);
    return raw === null ? null : (JSON.parse(raw) as StoredToken);
  };

  app.get('/v1/tokens', { config: { scope: 'admin' } }, async (_req, reply) => {
    const all = Object.values(await ctx.store.hgetall(TOKENS_KEY)).map((s) => publicToken(JSON.parse(s) as StoredToken));
    all.sort((a, b) => a.name.localeCompare(b.name));
    return withEtag(reply, { tokens: all });
  });

  app.post('/v1/tokens', { config: { scope: 'admin' } }, async (req, reply) => {
    const body = parseInput(createBody, req.body, 'body');
    if ((await ctx.auth.names()).has(body.name)) throw new ApiProblem('conflict', `a token named "${body.name}" exists`);
    const secret = newTokenSecret();
    const t: StoredToken = { id: randomBytes(8).toString('hex'), name: body.name, scopes: [...new Set(body.scopes)], created_at: new Date().toISOString(), created_by: who(req), hash: hashToken(secret) };
    await ctx.store.hset(TOKENS_KEY, t.id, JSON.stringify(t));
    ctx.auth.invalidate();
    await ctx.store.publish(TOKENS_CHANNEL, JSON.stringify({ op: 'create', id: t.id }));
    await ctx.audit.record({ token: who(req), action: 'token.create', method: req.method, path: req.url, resource: `tokens/${t.id}`, before: null, after: publicToken(t) });
    void reply.header('etag', etagOf(publicToken(t))).header('location', `/v1/tokens/${t.id}`);
    return reply.code(201).send({ ...publicToken(t), token: secret });
  });

  app.get('/v1/tokens/:id', { config: { scope: 'admin' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const t = await load(id);
    if (!t) throw notFound(`token ${id}`);
    return withEtag(reply, publicToken(t));
  });

  app.delete('/v1/tokens/:id', { config: { scope: 'admin' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const t = await load(id);
    checkPreconditions(req, t ? etagOf(publicToken(t)) : null);
    if (!t) throw notFound(`token ${id}`);
    await ctx.store.hdel(TOKENS_KEY, id);
    ctx.auth.invalidate();
    await ctx.store.publish(TOKENS_CHANNEL, JSON.stringify({ op: 'delete', id }));
    await ctx.audit.record({ token: who(req), action: 'token.delete', method: req.method, path: req.url, resource: `tokens/${id}`, before: publicToken(t), after: null });
    return reply.code(204).send();
  });
}
