// /v1/rules: the admin Sieve rules run at SMTP time by plugins/sieve (in name order), versioned
// by rules-repository.ts. A script that does not compile is refused with 422 and the compiler's
// line/column errors, and nothing is stored. Every change makes a new version of the whole rule
// set; a rollback makes a new version equal to an old one.
//
// ETag of a rule: its name and script (so a change to another rule does not make it stale).
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { RESERVED_RULE_NAMES, RULE_NAME, type RuleSetVersion } from '../rules-repository.js';
import { parseInput } from '../validate.js';

const nameParam = z.object({
  name: z
    .string()
    .regex(RULE_NAME, 'a rule name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit')
    .refine((n) => !RESERVED_RULE_NAMES.has(n), 'this name is reserved'),
});
const versionParam = z.object({ id: z.coerce.number().int().positive() });
const putBody = z.object({ script: z.string().min(1, 'the script is empty') }).strict();

const ruleTag = (name: string, script: string) => etagOf({ name, script });

const summary = (v: RuleSetVersion) => ({ id: v.id, created_at: v.created_at, token: v.token, change: v.change, rules: Object.keys(v.rules).sort() });

export function registerRuleRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const { rules } = ctx;

  app.get('/v1/rules', { config: { scope: 'read' } }, async (_req, reply) => withEtag(reply, await rules.list()));

  app.get('/v1/rules/versions', { config: { scope: 'read' } }, async (_req, reply) => {
    const [current, versions] = await Promise.all([rules.version(), rules.versions()]);
    return withEtag(reply, { current, versions: versions.map(summary) });
  });

  app.get('/v1/rules/versions/:id', { config: { scope: 'read' } }, async (req, reply) => {
    const { id } = parseInput(versionParam, req.params, 'path');
    const v = await rules.getVersion(id);
    if (!v) throw notFound(`rule set version ${id}`);
    return withEtag(reply, { ...summary(v), rules: Object.keys(v.rules).sort().map((name) => ({ name, script: v.rules[name]! })) });
  });

  app.post('/v1/rules/versions/:id/rollback', { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = parseInput(versionParam, req.params, 'path');
    const before = await rules.list();
    const v = await rules.rollback(who(req), id);
    await ctx.audit.record({ token: who(req), action: 'rules.rollback', method: req.method, path: req.url, resource: 'rules', before, after: { version: v.id, rules: Object.keys(v.rules).sort().map((name) => ({ name, script: v.rules[name]! })) } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.rollback', version: v.id, to: id }, `rules rolled back to version ${id} as version ${v.id}`);
    return withEtag(reply, summary(v));
  });

  app.get('/v1/rules/:name', { config: { scope: 'read' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    const [rule, version] = await Promise.all([rules.get(name), rules.version()]);
    if (!rule) throw notFound(`rule ${name}`);
    void reply.header('etag', ruleTag(rule.name, rule.script));
    return { ...rule, version };
  });

  app.put('/v1/rules/:name', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    const { script } = parseInput(putBody, req.body, 'body');
    const errors = rules.check(script);
    if (errors.length) {
      throw new ApiProblem('invalid-sieve', `${name}: ${errors[0]!.line}:${errors[0]!.column}: ${errors[0]!.message}`, { errors: errors.map((e) => ({ line: e.line, column: e.column, message: e.message })) });
    }
    let before: string | undefined;
    const v = await rules.change(who(req), { op: 'put', name }, (current) => {
      before = current[name];
      checkPreconditions(req, before === undefined ? null : ruleTag(name, before));
      return { ...current, [name]: script };
    });
    await ctx.audit.record({ token: who(req), action: 'rules.put', method: req.method, path: req.url, resource: `rules/${name}`, before: before === undefined ? null : { name, script: before }, after: { name, script, version: v.id } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.put', rule: name, version: v.id }, `rule ${name} stored as version ${v.id}`);
    void reply.header('etag', ruleTag(name, script));
    if (before === undefined) void reply.header('location', `/v1/rules/${name}`);
    return reply.code(before === undefined ? 201 : 200).send({ name, script, version: v.id });
  });

  app.delete('/v1/rules/:name', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    let before: string | undefined;
    const v = await rules.change(who(req), { op: 'delete', name }, (current) => {
      before = current[name];
      checkPreconditions(req, before === undefined ? null : ruleTag(name, before));
      if (before === undefined) throw notFound(`rule ${name}`);
      const next = { ...current };
      delete next[name];
      return next;
    });
    await ctx.audit.record({ token: who(req), action: 'rules.delete', method: req.method, path: req.url, resource: `rules/${name}`, before: { name, script: before }, after: null });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.delete', rule: name, version: v.id }, `rule ${name} deleted in version ${v.id}`);
    return reply.code(204).header('x-rules-version', String(v.id)).send();
  });
}
