// /v1/policies/relay/routes: next hops per domain added at run time, on top of the config's
// `routes` (src/policy/routes.ts). A key is a domain ("corp.example") or a wildcard for its
// subdomains (".corp.example"); PUT creates or replaces, DELETE removes (the config's route for
// the same key, if any, applies again). The SMTP front end, relay-acl, the router and the dry-run
// read the store hash on every lookup, so a change applies to the next transaction and delivery
// on every node, without a restart. Credentials (`auth.password`) are write-only: no answer, no
// audit entry and no log line carries them.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { POLICY_CHANNEL } from '../../policy/access.js';
import { nexthopProblem, publicRoute, RELAY_ROUTES_KEY, routeKey, type StoredRoute } from '../../policy/routes.js';
import { TLS_POLICIES } from '../../transport/tls-policy.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const oneLine = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !/[\0\r\n]/.test(s), 'must be one line');

const routeBody = z
  .object({
    nexthop: z.string().min(1).max(1024),
    tls: z.enum(TLS_POLICIES as unknown as [string, ...string[]]).optional(),
    auth: z.object({ username: oneLine(255), password: oneLine(1024) }).strict().optional(),
    mode: z.enum(['queue', 'proxy']).default('queue'),
    verify: z.enum(['none', 'callout', 'list']).default('none'),
    forward_client: z.enum(['none', 'xclient', 'xforward', 'auto']).optional(),
  })
  .strict()
  .superRefine((b, c) => {
    const problem = nexthopProblem(b.nexthop);
    if (problem) c.addIssue({ code: 'custom', path: ['nexthop'], message: problem });
    if (b.nexthop.startsWith('lmtp+unix:') && b.tls) c.addIssue({ code: 'custom', path: ['tls'], message: 'an lmtp+unix: next hop has no TLS' });
    if (b.auth && !/^smtps?:/.test(b.nexthop)) c.addIssue({ code: 'custom', path: ['auth'], message: 'credentials are for smtp:// and smtps:// next hops' });
    // A password sent in clear (no STARTTLS offered, or one stripped on the way) is a password
    // given away: credentials go only over TLS that must succeed.
    else if (b.auth && !b.nexthop.startsWith('smtps:') && b.tls !== 'required' && b.tls !== 'verify') {
      c.addIssue({ code: 'custom', path: ['tls'], message: 'credentials are sent only over TLS: set tls to required or verify (or use smtps://)' });
    }
  });

const domainParam = z.object({
  domain: z.string().refine((s) => routeKey(s) !== null, 'expected a domain such as corp.example, or .corp.example for all of its subdomains'),
});

export function registerRelayRouteRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const base = '/v1/policies/relay/routes';
  const load = async (key: string): Promise<StoredRoute | null> => {
    const raw = await ctx.store.hget(RELAY_ROUTES_KEY, key);
    return raw === null ? null : (JSON.parse(raw) as StoredRoute);
  };
  const etag = (r: StoredRoute) => etagOf(publicRoute(r));
  const changed = (op: string, id: string) => ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op, key: RELAY_ROUTES_KEY, id }));
  const audit = (req: FastifyRequest, action: string, key: string, before: StoredRoute | null, after: StoredRoute | null) =>
    ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource: `policies/relay/routes/${key}`, before: before && publicRoute(before), after: after && publicRoute(after) });

  app.get(base, { config: { scope: 'read' } }, async (_req, reply) => {
    const routes = Object.values(await ctx.store.hgetall(RELAY_ROUTES_KEY))
      .map((raw) => publicRoute(JSON.parse(raw) as StoredRoute))
      .sort((a, b) => a.domain.localeCompare(b.domain));
    return withEtag(reply, { routes });
  });

  app.get(`${base}/:domain`, { config: { scope: 'read' } }, async (req, reply) => {
    const key = routeKey(parseInput(domainParam, req.params, 'path').domain)!;
    const r = await load(key);
    if (!r) throw notFound(`route ${key}`);
    return withEtag(reply, publicRoute(r));
  });

  app.put(`${base}/:domain`, { config: { scope: 'write' } }, async (req, reply) => {
    const key = routeKey(parseInput(domainParam, req.params, 'path').domain)!;
    const body = parseInput(routeBody, req.body, 'body');
    const before = await load(key);
    checkPreconditions(req, before ? etag(before) : null);
    // Mail for a local domain is delivered here; a route would never be used (the router asks
    // the directory first), so it is refused rather than silently ignored.
    if (!key.startsWith('.') && (ctx.config.domains.local.includes(key) || ctx.directory?.isLocalDomain(key))) throw new ApiProblem('conflict', `${key} is a local domain; its mail is delivered here, not routed`);
    const route: StoredRoute = {
      domain: key,
      nexthop: body.nexthop,
      ...(body.tls ? { tls: body.tls as StoredRoute['tls'] } : {}),
      ...(body.auth ? { auth: body.auth } : {}),
      mode: body.mode,
      verify: body.verify,
      ...(body.forward_client ? { forward_client: body.forward_client } : {}),
      updated_at: new Date().toISOString(),
    };
    await ctx.store.hset(RELAY_ROUTES_KEY, key, JSON.stringify(route));
    await changed(before ? 'replace' : 'add', key);
    await audit(req, before ? 'relay.route.replace' : 'relay.route.add', key, before, route);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'relay.route.put', route: key, nexthop: route.nexthop }, `route for ${key} set to ${route.nexthop}`);
    void reply.header('etag', etag(route));
    if (before) return reply.code(200).send(publicRoute(route));
    void reply.header('location', `${base}/${key}`);
    return reply.code(201).send(publicRoute(route));
  });

  app.delete(`${base}/:domain`, { config: { scope: 'write' } }, async (req, reply) => {
    const key = routeKey(parseInput(domainParam, req.params, 'path').domain)!;
    const before = await load(key);
    checkPreconditions(req, before ? etag(before) : null);
    if (!before) throw notFound(`route ${key}`);
    await ctx.store.hdel(RELAY_ROUTES_KEY, key);
    await changed('delete', key);
    await audit(req, 'relay.route.delete', key, before, null);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'relay.route.delete', route: key }, `route for ${key} removed`);
    return reply.code(204).send();
  });
}
