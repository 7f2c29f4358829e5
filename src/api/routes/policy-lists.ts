// /v1/policies/relay/domains (domains we relay for) and /v1/policies/relay/senders and
// /recipients (access lists: allow or deny by address, domain or client CIDR). Kept in the store
// keys of src/policy/access.ts, read by plugins/relay-acl on every transaction: a change applies
// to the next transaction on every node, without a restart.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { accessId, classify, POLICY_CHANNEL, RECIPIENT_ACCESS_KEY, RELAY_DOMAINS_KEY, SENDER_ACCESS_KEY, type AccessEntry } from '../../policy/access.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const validDomain = (s: string) => {
  try {
    return classify(s).match === 'domain';
  } catch {
    return false;
  }
};
const domainBody = z.object({ domain: z.string().refine(validDomain, 'expected a domain name such as example.org') }).strict();
const domainParam = z.object({ domain: z.string().refine(validDomain, 'expected a domain name') });
const accessBody = z
  .object({
    value: z.string().refine(
      (s) => {
        try {
          classify(s);
          return true;
        } catch {
          return false;
        }
      },
      { message: 'expected an address, a domain or a CIDR range' },
    ),
    action: z.enum(['allow', 'deny']),
  })
  .strict();
const idParam = z.object({ id: z.string().regex(/^[0-9a-f]{12}$/, 'an entry id is 12 hex digits') });

export function registerPolicyListRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const changed = (op: string, key: string, id: string) => ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op, key, id }));
  const audit = (req: FastifyRequest, action: string, resource: string, before: unknown, after: unknown) => ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource, before, after });

  // ---- relay domains
  const domains = '/v1/policies/relay/domains';
  app.get(domains, { config: { scope: 'read' } }, async (_req, reply) => withEtag(reply, { domains: Object.keys(await ctx.store.hgetall(RELAY_DOMAINS_KEY)).sort().map((domain) => ({ domain })) }));

  app.post(domains, { config: { scope: 'write' } }, async (req, reply) => {
    const domain = classify(parseInput(domainBody, req.body, 'body').domain).value;
    if ((await ctx.store.hget(RELAY_DOMAINS_KEY, domain)) !== null) throw new ApiProblem('conflict', `${domain} is already a relay domain`);
    if (ctx.config.domains.local.includes(domain)) throw new ApiProblem('conflict', `${domain} is a local domain (domains.local)`);
    await ctx.store.hset(RELAY_DOMAINS_KEY, domain, '1');
    await changed('add', RELAY_DOMAINS_KEY, domain);
    await audit(req, 'relay.domain.add', `policies/relay/domains/${domain}`, null, { domain });
    void reply.header('etag', etagOf({ domain })).header('location', `${domains}/${domain}`);
    return reply.code(201).send({ domain });
  });

  app.get(`${domains}/:domain`, { config: { scope: 'read' } }, async (req, reply) => {
    const domain = classify(parseInput(domainParam, req.params, 'path').domain).value;
    if ((await ctx.store.hget(RELAY_DOMAINS_KEY, domain)) === null) throw notFound(`relay domain ${domain}`);
    return withEtag(reply, { domain });
  });

  app.delete(`${domains}/:domain`, { config: { scope: 'write' } }, async (req, reply) => {
    const domain = classify(parseInput(domainParam, req.params, 'path').domain).value;
    const exists = (await ctx.store.hget(RELAY_DOMAINS_KEY, domain)) !== null;
    checkPreconditions(req, exists ? etagOf({ domain }) : null);
    if (!exists) throw notFound(`relay domain ${domain}`);
    await ctx.store.hdel(RELAY_DOMAINS_KEY, domain);
    await changed('delete', RELAY_DOMAINS_KEY, domain);
    await audit(req, 'relay.domain.delete', `policies/relay/domains/${domain}`, { domain }, null);
    return reply.code(204).send();
  });

  // ---- access lists
  for (const [kind, key] of [
    ['senders', SENDER_ACCESS_KEY],
    ['recipients', RECIPIENT_ACCESS_KEY],
  ] as const) {
    const base = `/v1/policies/relay/${kind}`;
    const load = async (id: string) => {
      const raw = await ctx.store.hget(key, id);
      return raw === null ? null : (JSON.parse(raw) as AccessEntry);
    };

    app.get(base, { config: { scope: 'read' } }, async (_req, reply) => {
      const entries = Object.values(await ctx.store.hgetall(key))
        .map((s) => JSON.parse(s) as AccessEntry)
        .sort((a, b) => a.match.localeCompare(b.match) || a.value.localeCompare(b.value));
      return withEtag(reply, { entries });
    });

    app.post(base, { config: { scope: 'write' } }, async (req, reply) => {
      const body = parseInput(accessBody, req.body, 'body');
      const c = classify(body.value);
      const entry: AccessEntry = { id: accessId(c.match, c.value), ...c, action: body.action };
      const existing = await load(entry.id);
      if (existing) throw new ApiProblem('conflict', `${c.value} is already listed (${existing.action}, id ${existing.id})`);
      await ctx.store.hset(key, entry.id, JSON.stringify(entry));
      await changed('add', key, entry.id);
      await audit(req, `access.${kind}.add`, `policies/relay/${kind}/${entry.id}`, null, entry);
      void reply.header('etag', etagOf(entry)).header('location', `${base}/${entry.id}`);
      return reply.code(201).send(entry);
    });

    app.get(`${base}/:id`, { config: { scope: 'read' } }, async (req, reply) => {
      const { id } = parseInput(idParam, req.params, 'path');
      const e = await load(id);
      if (!e) throw notFound(`${kind} access entry ${id}`);
      return withEtag(reply, e);
    });

    app.delete(`${base}/:id`, { config: { scope: 'write' } }, async (req, reply) => {
      const { id } = parseInput(idParam, req.params, 'path');
      const e = await load(id);
      checkPreconditions(req, e ? etagOf(e) : null);
      if (!e) throw notFound(`${kind} access entry ${id}`);
      await ctx.store.hdel(key, id);
      await changed('delete', key, id);
      await audit(req, `access.${kind}.delete`, `policies/relay/${kind}/${id}`, e, null);
      return reply.code(204).send();
    });
  }
}
