// /v1/verify/lists/{domain}: the recipient lists that routes with `verify: list` check at RCPT
// (src/proxy/verify.ts reads the store hash `verify:list:<domain>`, field = address in lower
// case). A change applies to the next RCPT on every node sharing the store.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { parseAddress } from '../../address/address.js';
import { who, type ApiContext } from '../context.js';
import { withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;
const domainParam = z.object({ domain: z.string().regex(DOMAIN_RE, 'expected a domain name such as example.org') });
const addressParam = domainParam.extend({ address: z.string().min(3).max(320) });

export const verifyListKey = (domain: string) => `verify:list:${domain.toLowerCase()}`;

export function registerVerifyListRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const base = '/v1/verify/lists';
  const audit = (req: FastifyRequest, action: string, resource: string, before: unknown, after: unknown) => ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource, before, after });
  /** The address, lower case, checked to be in the path's domain. */
  const addressIn = (req: FastifyRequest) => {
    const p = parseInput(addressParam, req.params, 'path');
    const domain = p.domain.toLowerCase();
    let address: string;
    try {
      const a = parseAddress(p.address);
      if (a.tricks.length > 0 || a.domain.toLowerCase() !== domain) throw new Error('other domain');
      address = a.address.toLowerCase();
    } catch {
      throw new ApiProblem('bad-request', `expected an address in ${domain}, got ${JSON.stringify(p.address.slice(0, 100))}`);
    }
    return { domain, address };
  };

  app.get(`${base}/:domain`, { config: { scope: 'read' } }, async (req, reply) => {
    const domain = parseInput(domainParam, req.params, 'path').domain.toLowerCase();
    const addresses = Object.keys(await ctx.store.hgetall(verifyListKey(domain))).sort();
    return withEtag(reply, { domain, addresses });
  });

  app.put(`${base}/:domain/:address`, { config: { scope: 'write' } }, async (req, reply) => {
    const { domain, address } = addressIn(req);
    const existed = (await ctx.store.hget(verifyListKey(domain), address)) !== null;
    if (!existed) {
      await ctx.store.hset(verifyListKey(domain), address, '1');
      await audit(req, 'verify.list.add', `verify/lists/${domain}/${address}`, null, { address });
    }
    return reply.code(existed ? 200 : 201).send({ address });
  });

  app.delete(`${base}/:domain/:address`, { config: { scope: 'write' } }, async (req, reply) => {
    const { domain, address } = addressIn(req);
    if ((await ctx.store.hdel(verifyListKey(domain), address)) === 0) throw notFound(`${address} in the ${domain} recipient list`);
    await audit(req, 'verify.list.delete', `verify/lists/${domain}/${address}`, { address }, null);
    return reply.code(204).send();
  });
}
