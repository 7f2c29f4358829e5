// /v1/users/{address}/sieve: a user's Sieve scripts, in the same store keys ManageSieve uses
// (src/managesieve/repository.ts), with its rules: scripts compile before they are stored (422
// with line/column otherwise), at most one is active, the active one cannot be deleted (409),
// names and quotas per RFC 5804 (a bad name is 400, over quota 422).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { canonicalAddress } from '../../directory/store-directory.js';
import { ScriptError, ScriptRepository, invalidScriptName } from '../../managesieve/repository.js';
import { compile } from '../../sieve/compile.js';
import { compileOptions } from '../../sieve/config.js';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { parseInput } from '../validate.js';

const params = z.object({
  address: z.string().min(3).max(320).regex(/^[^@\s/]+@[^@\s/]+$/, 'expected an address local@domain'),
  name: z
    .string()
    .optional()
    .refine((n) => n === undefined || invalidScriptName(n) === null, { message: 'not a valid script name (RFC 5804 §1.6)' }),
});
const putBody = z.object({ script: z.string().min(1, 'the script is empty'), active: z.boolean().optional() }).strict();

export function registerUserSieveRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const repo = new ScriptRepository(ctx.store);
  const base = '/v1/users/:address/sieve';

  /** The canonical user address of the path; 404 when no such user exists. */
  const user = async (req: FastifyRequest): Promise<{ address: string; name?: string }> => {
    const p = parseInput(params, req.params, 'path');
    let address: string;
    try {
      address = canonicalAddress(p.address);
    } catch {
      throw new ApiProblem('bad-request', `${p.address} is not a valid address`, { errors: [{ pointer: '/path/address', message: 'not a valid address' }] });
    }
    if (!ctx.directory || !(await ctx.directory.getUser(address))) throw notFound(`user ${address}`);
    return { address, ...(p.name !== undefined ? { name: p.name } : {}) };
  };
  const script = async (address: string, name: string) => {
    const [text, active] = await Promise.all([repo.get(address, name), repo.activeName(address)]);
    return text === null ? null : { name, script: text, active: active === name };
  };

  app.get(base, { config: { scope: 'read' } }, async (req, reply) => {
    const { address } = await user(req);
    const scripts = await repo.list(address);
    return withEtag(reply, { active: scripts.find((s) => s.active)?.name ?? null, scripts });
  });

  app.get(`${base}/:name`, { config: { scope: 'read' } }, async (req, reply) => {
    const { address, name } = await user(req);
    const s = await script(address, name!);
    if (!s) throw notFound(`script ${name} of ${address}`);
    return withEtag(reply, s);
  });

  app.put(`${base}/:name`, { config: { scope: 'write' } }, async (req, reply) => {
    const { address, name } = await user(req);
    const body = parseInput(putBody, req.body, 'body');
    const r = compile(body.script, compileOptions(ctx.config.sieve));
    if (!r.ok) throw new ApiProblem('invalid-sieve', `${name}: ${r.errors[0]!.line}:${r.errors[0]!.column}: ${r.errors[0]!.message}`, { errors: r.errors.map((e) => ({ line: e.line, column: e.column, message: e.message })) });
    const before = await script(address, name!);
    checkPreconditions(req, before ? etagOf(before) : null);
    try {
      await repo.put(address, name!, body.script);
      if (body.active === true) await repo.setActive(address, name!);
      else if (body.active === false && before?.active) await repo.setActive(address, '');
    } catch (e) {
      if (e instanceof ScriptError) throw new ApiProblem(e.code === 'invalid-name' ? 'bad-request' : 'unprocessable', e.message);
      throw e;
    }
    const after = (await script(address, name!))!;
    await ctx.audit.record({ token: who(req), action: 'user.sieve.put', method: req.method, path: req.url, resource: `users/${address}/sieve/${name}`, before, after });
    void reply.header('etag', etagOf(after));
    return reply.code(before ? 200 : 201).send(after);
  });

  app.delete(`${base}/:name`, { config: { scope: 'write' } }, async (req, reply) => {
    const { address, name } = await user(req);
    const before = await script(address, name!);
    checkPreconditions(req, before ? etagOf(before) : null);
    if (!before) throw notFound(`script ${name} of ${address}`);
    try {
      await repo.delete(address, name!);
    } catch (e) {
      if (e instanceof ScriptError && e.code === 'active') throw new ApiProblem('conflict', e.message);
      if (e instanceof ScriptError && e.code === 'nonexistent') throw notFound(`script ${name} of ${address}`);
      throw e;
    }
    await ctx.audit.record({ token: who(req), action: 'user.sieve.delete', method: req.method, path: req.url, resource: `users/${address}/sieve/${name}`, before, after: null });
    return reply.code(204).send();
  });
}
