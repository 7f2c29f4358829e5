// /v1/dnsbl/zones: DNS blocklist zones added at run time, on top of the dnsbl plugin's configured
// `zones` (src/policy/dnsbl.ts): which A answers count as a listing, and what a listing does
// (refuse at connect, refuse at RCPT, or add a score). PUT creates or replaces a zone, DELETE
// removes it (a configured zone of the same name applies again). The plugin reads the store hash
// on every check, so a change applies to the next connection on every node, without a restart.
// The dnsbl plugin must be in the chain (`plugins: [dnsbl]`; with no `zones` of its own, it uses
// only these).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { POLICY_CHANNEL } from '../../policy/access.js';
import { DNSBL_ACTIONS, DNSBL_ZONES_KEY, validAnswer, zoneName, type StoredZone } from '../../policy/dnsbl.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const zoneBody = z
  .object({
    answers: z.array(z.string().refine(validAnswer, 'expected an IPv4 address (127.0.0.2), a range (127.0.0.0/24) or from-to (127.0.0.2-127.0.0.11)')).min(1).max(256).optional(),
    action: z.enum(DNSBL_ACTIONS).default('reject-connect'),
    score: z.number().positive().max(1000).optional(),
  })
  .strict()
  .superRefine((b, c) => {
    if (b.action === 'score' && b.score === undefined) c.addIssue({ code: 'custom', path: ['score'], message: 'action score needs a score' });
    if (b.action !== 'score' && b.score !== undefined) c.addIssue({ code: 'custom', path: ['score'], message: 'a score applies only with action score' });
  });

const zoneParam = z.object({ zone: z.string().refine((s) => zoneName(s) !== null, 'expected a DNS zone such as zen.example') });

export function registerDnsblRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const base = '/v1/dnsbl/zones';
  const load = async (zone: string): Promise<StoredZone | null> => {
    const raw = await ctx.store.hget(DNSBL_ZONES_KEY, zone);
    return raw === null ? null : (JSON.parse(raw) as StoredZone);
  };
  const changed = (op: string, zone: string) => ctx.store.publish(POLICY_CHANNEL, JSON.stringify({ op, key: DNSBL_ZONES_KEY, id: zone }));
  const audit = (req: FastifyRequest, action: string, zone: string, before: StoredZone | null, after: StoredZone | null) =>
    ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource: `dnsbl/zones/${zone}`, before, after });

  app.get(base, { config: { scope: 'read' } }, async (_req, reply) => {
    const zones = Object.values(await ctx.store.hgetall(DNSBL_ZONES_KEY))
      .map((raw) => JSON.parse(raw) as StoredZone)
      .sort((a, b) => a.zone.localeCompare(b.zone));
    return withEtag(reply, { zones });
  });

  app.get(`${base}/:zone`, { config: { scope: 'read' } }, async (req, reply) => {
    const zone = zoneName(parseInput(zoneParam, req.params, 'path').zone)!;
    const z = await load(zone);
    if (!z) throw notFound(`DNSBL zone ${zone}`);
    return withEtag(reply, z);
  });

  app.put(`${base}/:zone`, { config: { scope: 'write' } }, async (req, reply) => {
    const zone = zoneName(parseInput(zoneParam, req.params, 'path').zone)!;
    const b = parseInput(zoneBody, req.body, 'body');
    const before = await load(zone);
    checkPreconditions(req, before ? etagOf(before) : null);
    const z: StoredZone = {
      zone,
      ...(b.answers ? { answers: b.answers.map((a) => a.trim()) } : {}),
      action: b.action,
      ...(b.score !== undefined ? { score: b.score } : {}),
      updated_at: new Date().toISOString(),
    };
    await ctx.store.hset(DNSBL_ZONES_KEY, zone, JSON.stringify(z));
    await changed(before ? 'replace' : 'add', zone);
    await audit(req, before ? 'dnsbl.zone.replace' : 'dnsbl.zone.add', zone, before, z);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'dnsbl.zone.put', zone, zoneAction: z.action }, `DNSBL zone ${zone} set (${z.action})`);
    void reply.header('etag', etagOf(z));
    if (before) return reply.code(200).send(z);
    void reply.header('location', `${base}/${zone}`);
    return reply.code(201).send(z);
  });

  app.delete(`${base}/:zone`, { config: { scope: 'write' } }, async (req, reply) => {
    const zone = zoneName(parseInput(zoneParam, req.params, 'path').zone)!;
    const before = await load(zone);
    checkPreconditions(req, before ? etagOf(before) : null);
    if (!before) throw notFound(`DNSBL zone ${zone}`);
    await ctx.store.hdel(DNSBL_ZONES_KEY, zone);
    await changed('delete', zone);
    await audit(req, 'dnsbl.zone.delete', zone, before, null);
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'dnsbl.zone.delete', zone }, `DNSBL zone ${zone} removed`);
    return reply.code(204).send();
  });
}
