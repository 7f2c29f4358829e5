// The directory (src/directory): /v1/users, /v1/aliases, /v1/domains. Passwords are write-only:
// PUT /v1/users/{address} takes one and no answer ever shows it or its hash. Local domains come
// from the config (`domains.local`) and are read-only here; each may have a catch-all
// (PUT/DELETE /v1/domains/{name}/catch-all). Changes reach every process sharing the store at
// its next lookup (the directory's `directory` channel).
//
// Directory refusals map to problems: exists → 409, no-such-user → 404, an address outside the
// local domains, a malformed address or target, an empty password → 422.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { DirectoryError, canonicalAddress } from '../../directory/store-directory.js';
import type { User } from '../../directory/directory.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const addressParam = z.object({ address: z.string().min(3).max(320).regex(/^[^@\s/]+@[^@\s/]+$/, 'expected an address local@domain') });
const domainParam = z.object({ name: z.string().min(1).max(253).regex(/^[A-Za-z0-9.-]+$/, 'expected a domain name') });
const passwordBody = z.object({ password: z.string().min(1, 'the password is empty').max(1024) }).strict();
const aliasBody = z.object({ targets: z.array(z.string().min(3).max(320)).min(1).max(1000) }).strict();
const catchAllBody = z.object({ target: z.string().min(3).max(320) }).strict();

const publicUser = (u: User) => ({ address: u.address, created_at: new Date(u.createdAt).toISOString(), password_set: u.passwordHash !== undefined });
// The password hash counts in the tag (a new password is a new version) but is never shown.
const userTag = (u: User) => etagOf({ ...publicUser(u), h: u.passwordHash ?? null });

function directoryProblem(e: unknown): never {
  if (e instanceof DirectoryError) {
    if (e.code === 'exists') throw new ApiProblem('conflict', e.message);
    if (e.code === 'no-such-user') throw new ApiProblem('not-found', e.message);
    throw new ApiProblem('unprocessable', e.message);
  }
  throw e;
}

/** The canonical form of a path address; a malformed one is 400. */
function canon(req: FastifyRequest): string {
  const { address } = parseInput(addressParam, req.params, 'path');
  try {
    return canonicalAddress(address);
  } catch (e) {
    throw new ApiProblem('bad-request', e instanceof Error ? e.message : String(e), { errors: [{ pointer: '/path/address', message: 'not a valid address' }] });
  }
}

export function registerDirectoryRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const dir = () => {
    if (!ctx.directory) throw new ApiProblem('unprocessable', 'this API instance has no directory');
    return ctx.directory;
  };
  const audit = (req: FastifyRequest, action: string, resource: string, before: unknown, after: unknown) => ctx.audit.record({ token: who(req), action, method: req.method, path: req.url, resource, before, after });

  // ---- users
  app.get('/v1/users', { config: { scope: 'read' } }, async (_req, reply) => withEtag(reply, { users: (await dir().listUsers()).map(publicUser) }));

  app.get('/v1/users/:address', { config: { scope: 'read' } }, async (req, reply) => {
    const address = canon(req);
    const u = await dir().getUser(address);
    if (!u) throw notFound(`user ${address}`);
    void reply.header('etag', userTag(u));
    return publicUser(u);
  });

  app.put('/v1/users/:address', { config: { scope: 'write' } }, async (req, reply) => {
    const address = canon(req);
    const { password } = parseInput(passwordBody, req.body, 'body');
    const before = await dir().getUser(address);
    checkPreconditions(req, before ? userTag(before) : null);
    try {
      if (before) await dir().setPassword(address, password);
      else await dir().addUser(address, password);
    } catch (e) {
      directoryProblem(e);
    }
    const u = (await dir().getUser(address))!;
    await audit(req, before ? 'user.password' : 'user.add', `users/${u.address}`, before ? publicUser(before) : null, publicUser(u));
    void reply.header('etag', userTag(u));
    if (!before) void reply.header('location', `/v1/users/${u.address}`);
    return reply.code(before ? 200 : 201).send(publicUser(u));
  });

  app.delete('/v1/users/:address', { config: { scope: 'write' } }, async (req, reply) => {
    const address = canon(req);
    const before = await dir().getUser(address);
    checkPreconditions(req, before ? userTag(before) : null);
    if (!before || !(await dir().deleteUser(address))) throw notFound(`user ${address}`);
    await audit(req, 'user.delete', `users/${before.address}`, publicUser(before), null);
    return reply.code(204).send();
  });

  // ---- aliases
  const getAlias = async (address: string) => {
    const d = dir();
    if (!d.getAlias) throw new ApiProblem('unprocessable', 'this directory does not list aliases');
    return d.getAlias(address);
  };

  app.get('/v1/aliases', { config: { scope: 'read' } }, async (_req, reply) => {
    const d = dir();
    const all = d.listAliases ? await d.listAliases() : {};
    return withEtag(reply, { aliases: Object.entries(all).map(([address, targets]) => ({ address, targets })) });
  });

  app.get('/v1/aliases/:address', { config: { scope: 'read' } }, async (req, reply) => {
    const address = canon(req);
    const targets = await getAlias(address);
    if (!targets) throw notFound(`alias ${address}`);
    return withEtag(reply, { address, targets });
  });

  app.put('/v1/aliases/:address', { config: { scope: 'write' } }, async (req, reply) => {
    const address = canon(req);
    const { targets } = parseInput(aliasBody, req.body, 'body');
    const before = await getAlias(address);
    checkPreconditions(req, before ? etagOf({ address, targets: before }) : null);
    try {
      await dir().setAlias(address, targets);
    } catch (e) {
      directoryProblem(e);
    }
    const alias = { address, targets: (await getAlias(address))! };
    await audit(req, 'alias.set', `aliases/${address}`, before ? { address, targets: before } : null, alias);
    void reply.header('etag', etagOf(alias));
    if (!before) void reply.header('location', `/v1/aliases/${address}`);
    return reply.code(before ? 200 : 201).send(alias);
  });

  app.delete('/v1/aliases/:address', { config: { scope: 'write' } }, async (req, reply) => {
    const address = canon(req);
    const before = await getAlias(address);
    checkPreconditions(req, before ? etagOf({ address, targets: before }) : null);
    if (!before || !(await dir().deleteAlias(address))) throw notFound(`alias ${address}`);
    await audit(req, 'alias.delete', `aliases/${address}`, { address, targets: before }, null);
    return reply.code(204).send();
  });

  // ---- domains (local domains from the config; catch-all per domain)
  const domain = async (name: string) => {
    const n = name.toLowerCase().replace(/\.$/, '');
    if (!ctx.config.domains.local.includes(n)) return null;
    const raw = await ctx.store.get(`dir:catchall:${n}`);
    return { name: n, catch_all: raw === null ? null : ((JSON.parse(raw) as { target: string }).target ?? null) };
  };

  app.get('/v1/domains', { config: { scope: 'read' } }, async (_req, reply) => withEtag(reply, { domains: await Promise.all(ctx.config.domains.local.map(async (n) => (await domain(n))!)) }));

  app.get('/v1/domains/:name', { config: { scope: 'read' } }, async (req, reply) => {
    const { name } = parseInput(domainParam, req.params, 'path');
    const d = await domain(name);
    if (!d) throw notFound(`local domain ${name}`);
    return withEtag(reply, d);
  });

  app.put('/v1/domains/:name/catch-all', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(domainParam, req.params, 'path');
    const { target } = parseInput(catchAllBody, req.body, 'body');
    const before = await domain(name);
    if (!before) throw notFound(`local domain ${name}`);
    checkPreconditions(req, etagOf(before));
    try {
      await dir().setCatchAll(before.name, target);
    } catch (e) {
      directoryProblem(e);
    }
    const after = (await domain(name))!;
    await audit(req, 'domain.catch_all.set', `domains/${after.name}`, before, after);
    return withEtag(reply, after);
  });

  app.delete('/v1/domains/:name/catch-all', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(domainParam, req.params, 'path');
    const before = await domain(name);
    if (!before) throw notFound(`local domain ${name}`);
    checkPreconditions(req, etagOf(before));
    if (before.catch_all === null) throw notFound(`a catch-all for ${before.name}`);
    await dir().setCatchAll(before.name, null);
    await audit(req, 'domain.catch_all.delete', `domains/${before.name}`, before, { ...before, catch_all: null });
    return reply.code(204).send();
  });
}
