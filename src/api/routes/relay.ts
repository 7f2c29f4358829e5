// /v1/policies/relay/networks: trusted networks added at run time (clients that may relay
// anywhere). Kept in the store hash `policy:relay:networks` (id → CIDR), which plugins/relay-acl
// reads on every connection, so a change applies to the next connection on every node, without
// a restart. The id is derived from the network itself, so adding the same network twice is a
// 409. The networks of `relay.networks` in the config are not listed here (they are not editable).
import type { FastifyInstance } from 'fastify';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { parseRange } from '../../address/cidr.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

import { POLICY_CHANNEL, RELAY_NETWORKS_KEY } from '../../policy/access.js';

/** "10.0.0.7/8" → "10.0.0.0/8"; a bare address → a /32 or /128; throws on nonsense. */
export function normaliseCidr(s: string): string {
  const [addr, bits] = parseRange(s);
  const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${bits}`) : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${bits}`);
  return `${net.toString()}/${bits}`;
}

const networkId = (cidr: string) => createHash('sha256').update(cidr).digest('hex').slice(0, 12);

const createBody = z
  .object({
    cidr: z.string().refine(
      (s) => {
        try {
          normaliseCidr(s);
          return true;
        } catch {
          return false;
        }
      },
      { message: 'expected an IP address or CIDR range such as 10.0.0.0/8 or 2001:db8::/32' },
    ),
  })
  .strict();
const idParam = z.object({ id: z.string().regex(/^[0-9a-f]{12}$/, 'a network id is 12 hex digits') });

export function registerRelayRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const base = '/v1/policies/relay/networks';

  app.get(base, { config: { scope: 'read' } }, async (_req, reply) => {
    const all = await ctx.store.hgetall(RELAY_NETWORKS_KEY);
    const networks = Object.entries(all)
      .map(([id, cidr]) => ({ id, cidr }))
      .sort((a, b) => a.cidr.localeCompare(b.cidr));
    return withEtag(reply, { networks });
  });

  app.post(base, { config: { scope: 'write' } }, async (req, reply) => {
    const { cidr: given } = parseInput(createBody, req.body, 'body');
    const cidr = normaliseCidr(given);
    const id = networkId(cidr);
    if ((await ctx.store.hget(RELAY_NETWORKS_KEY, id)) !== null) throw new ApiProblem('conflict', `${cidr} is already a trusted network (id ${id})`);
    await ctx.store.hset(RELAY_NETWORKS_KEY, id, cidr);
    await ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op: 'add', key: RELAY_NETWORKS_KEY, id }));
    const network = { id, cidr };
    await ctx.audit.record({ token: who(req), action: 'relay.network.add', method: req.method, path: req.url, resource: `policies/relay/networks/${id}`, before: null, after: network });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'relay.network.add', cidr }, `relay network ${cidr} added`);
    void reply.header('etag', etagOf(network)).header('location', `${base}/${id}`);
    return reply.code(201).send(network);
  });

  app.get(`${base}/:id`, { config: { scope: 'read' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const cidr = await ctx.store.hget(RELAY_NETWORKS_KEY, id);
    if (cidr === null) throw notFound(`relay network ${id}`);
    return withEtag(reply, { id, cidr });
  });

  app.delete(`${base}/:id`, { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = parseInput(idParam, req.params, 'path');
    const cidr = await ctx.store.hget(RELAY_NETWORKS_KEY, id);
    checkPreconditions(req, cidr === null ? null : etagOf({ id, cidr }));
    if (cidr === null) throw notFound(`relay network ${id}`);
    await ctx.store.hdel(RELAY_NETWORKS_KEY, id);
    await ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op: 'delete', key: RELAY_NETWORKS_KEY, id }));
    await ctx.audit.record({ token: who(req), action: 'relay.network.delete', method: req.method, path: req.url, resource: `policies/relay/networks/${id}`, before: { id, cidr }, after: null });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'relay.network.delete', cidr }, `relay network ${cidr} removed`);
    return reply.code(204).send();
  });
}
