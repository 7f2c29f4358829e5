// /v1/rules: the admin Sieve rules run at SMTP time by plugins/sieve, versioned by
// rules-repository.ts. A script that does not compile is refused with 422 and the compiler's
// line/column errors, and nothing is stored. Every change makes a new version of the whole rule
// set; a rollback makes a new version equal to an old one (scripts, order and activation).
//
// The rules run in one order (name order unless ordered otherwise); each has a position within
// its stage and an active flag, and its stage follows from the order: rcpt for the envelope-only
// rules that lead it (also decided at RCPT), data from the first rule that reads the message on
// (sieve/rule-order.ts). PUT may place the rule with the script; PATCH /v1/rules/{name} moves it
// or switches it on or off; PUT /v1/rules/stages/{stage} reorders a whole stage. A `stage` asked
// for is checked: a rule that would come out at the other one is refused (422, nothing stored).
// A move without one takes the stage that follows (an envelope-only rule moved to the head of
// stage data, right after the rcpt rules, is decided at RCPT like them).
//
// ETag of a rule: its name, script, stage, position and activation (so a change to another rule
// makes it stale only when it moved the rule). ETag of a stage: its name and order.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { who, type ApiContext } from '../context.js';
import { checkPreconditions, etagOf, withEtag } from '../etag.js';
import { ApiProblem, notFound } from '../errors.js';
import { RESERVED_RULE_NAMES, RULE_NAME, type Rule, type RuleSetVersion } from '../rules-repository.js';
import { place, PositionOutOfRange, RULE_STAGES, stageOrder, type RuleStage } from '../../sieve/rule-order.js';
import { parseInput } from '../validate.js';

const ruleName = z
  .string()
  .regex(RULE_NAME, 'a rule name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit')
  .refine((n) => !RESERVED_RULE_NAMES.has(n), 'this name is reserved');
const nameParam = z.object({ name: ruleName });
const stageParam = z.object({ stage: z.string() });
const versionParam = z.object({ id: z.coerce.number().int().positive() });
const settings = {
  stage: z.enum(RULE_STAGES).optional(),
  position: z.number().int('position is a whole number').min(1, 'positions start at 1').optional(),
  active: z.boolean().optional(),
};
const putBody = z.object({ script: z.string().min(1, 'the script is empty'), ...settings }).strict();
const patchBody = z
  .object(settings)
  .strict()
  .refine((b) => b.stage !== undefined || b.position !== undefined || b.active !== undefined, 'give at least one of stage, position, active');
const orderBody = z
  .object({ order: z.array(ruleName) })
  .strict()
  .refine((b) => new Set(b.order).size === b.order.length, { message: 'a rule is named twice', path: ['order'] });

const view = (r: Rule) => ({ name: r.name, script: r.script, stage: r.stage, position: r.position, active: r.active });
const ruleTag = (r: Rule) => etagOf(view(r));
const stageTag = (stage: RuleStage, order: string[]) => etagOf({ stage, order });

/**
 * GET answers serialized once per rule-set version: the repository hands out the same Rule
 * objects (built with their version) until the version changes, so they key these caches.
 */
const listAnswers = new WeakMap<Rule[], { body: string; etag: string }>();
const ruleAnswers = new WeakMap<Rule, { body: string; etag: string }>();

function memo<K extends object>(cache: WeakMap<K, { body: string; etag: string }>, key: K, make: () => { body: string; etag: string }) {
  let answer = cache.get(key);
  if (!answer) cache.set(key, (answer = make()));
  return answer;
}

const summary = (v: RuleSetVersion) => ({ id: v.id, created_at: v.created_at, token: v.token, change: v.change, rules: Object.keys(v.rules).sort() });

/** The stage of the path, or 404: /v1/rules/stages/{stage} exists for rcpt and data only. */
function stageOf(req: FastifyRequest): RuleStage {
  const { stage } = parseInput(stageParam, req.params, 'path');
  if (!(RULE_STAGES as readonly string[]).includes(stage)) throw notFound(`stage ${stage} (stages are ${RULE_STAGES.join(', ')})`);
  return stage as RuleStage;
}

/** `place` with its range error as a 422 naming the field. */
function placed(rules: Rule[], name: string, to: Parameters<typeof place>[2], field: string) {
  try {
    return place(rules, name, to);
  } catch (e) {
    if (e instanceof PositionOutOfRange) throw new ApiProblem('unprocessable', `${field}: ${e.message}`, { errors: [{ pointer: field, message: e.message }] });
    throw e;
  }
}

/** The stage a PUT or PATCH asked for, for the repository to check (RuleSetDraft.expect). */
const expected = (name: string, to: { stage?: RuleStage }) => (to.stage ? { expect: { name, stage: to.stage } } : {});

export function registerRuleRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const { rules } = ctx;

  app.get('/v1/rules', { config: { scope: 'read' } }, async (_req, reply) => {
    const { version, rules: all } = await rules.list();
    const answer = memo(listAnswers, all, () => {
      const value = { version, rules: all.map(view) };
      return { body: JSON.stringify(value), etag: etagOf(value) };
    });
    return reply.header('etag', answer.etag).type('application/json; charset=utf-8').send(answer.body);
  });

  app.get('/v1/rules/versions', { config: { scope: 'read' } }, async (_req, reply) => {
    const [current, versions] = await Promise.all([rules.version(), rules.versions()]);
    return withEtag(reply, { current, versions: versions.map(summary) });
  });

  app.get('/v1/rules/versions/:id', { config: { scope: 'read' } }, async (req, reply) => {
    const { id } = parseInput(versionParam, req.params, 'path');
    const v = await rules.getVersion(id);
    if (!v) throw notFound(`rule set version ${id}`);
    return withEtag(reply, { ...summary(v), rules: (await rules.rulesOf(v)).map(view) });
  });

  app.post('/v1/rules/versions/:id/rollback', { config: { scope: 'write' } }, async (req, reply) => {
    const { id } = parseInput(versionParam, req.params, 'path');
    const before = await rules.list();
    const { version: v, rules: after } = await rules.rollback(who(req), id);
    await ctx.audit.record({ token: who(req), action: 'rules.rollback', method: req.method, path: req.url, resource: 'rules', before: { version: before.version, rules: before.rules.map(view) }, after: { version: v.id, rules: after.map(view) } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.rollback', version: v.id, to: id }, `rules rolled back to version ${id} as version ${v.id}`);
    return withEtag(reply, summary(v));
  });

  app.get('/v1/rules/stages/:stage', { config: { scope: 'read' } }, async (req, reply) => {
    const stage = stageOf(req);
    const { version, rules: all } = await rules.list();
    const order = stageOrder(all, stage);
    void reply.header('etag', stageTag(stage, order));
    return { stage, version, rules: all.filter((r) => r.stage === stage).map(view) };
  });

  app.put('/v1/rules/stages/:stage', { config: { scope: 'write' } }, async (req, reply) => {
    const stage = stageOf(req);
    const { order } = parseInput(orderBody, req.body, 'body');
    let before: string[] = [];
    const { version: v, rules: after } = await rules.change(who(req), { op: 'order', stage }, (current) => {
      before = stageOrder(current, stage);
      checkPreconditions(req, stageTag(stage, before));
      const missing = before.filter((n) => !order.includes(n));
      const foreign = order.filter((n) => !before.includes(n));
      if (missing.length || foreign.length) {
        const problems = [...(missing.length ? [`missing: ${missing.join(', ')}`] : []), ...(foreign.length ? [`not at stage ${stage}: ${foreign.join(', ')}`] : [])];
        throw new ApiProblem('unprocessable', `order must name every rule of stage ${stage} once (${problems.join('; ')})`, { errors: [{ pointer: '/body/order', message: problems.join('; ') }] });
      }
      const meta = Object.fromEntries(current.map((r) => [r.name, { stage: r.stage, position: r.stage === stage ? order.indexOf(r.name) + 1 : r.position, active: r.active }]));
      return { scripts: Object.fromEntries(current.map((r) => [r.name, r.script])), meta };
    });
    // The stage as it came out: the rule put first at stage data joins stage rcpt when it and
    // every rule before it ask only envelope questions.
    const now = stageOrder(after, stage);
    await ctx.audit.record({ token: who(req), action: 'rules.order', method: req.method, path: req.url, resource: `rules/stages/${stage}`, before: { stage, order: before }, after: { stage, order: now, version: v.id } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.order', stage, version: v.id }, `stage ${stage} reordered in version ${v.id}`);
    void reply.header('etag', stageTag(stage, now));
    return { stage, version: v.id, rules: after.filter((r) => r.stage === stage).map(view) };
  });

  app.get('/v1/rules/:name', { config: { scope: 'read' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    const { rule, version } = await rules.get(name);
    if (!rule) throw notFound(`rule ${name}`);
    const answer = memo(ruleAnswers, rule, () => ({ body: JSON.stringify({ ...view(rule), version }), etag: ruleTag(rule) }));
    return reply.header('etag', answer.etag).type('application/json; charset=utf-8').send(answer.body);
  });

  app.put('/v1/rules/:name', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    const { script, ...to } = parseInput(putBody, req.body, 'body');
    const errors = rules.check(script);
    if (errors.length) {
      throw new ApiProblem('invalid-sieve', `${name}: ${errors[0]!.line}:${errors[0]!.column}: ${errors[0]!.message}`, { errors: errors.map((e) => ({ line: e.line, column: e.column, message: e.message })) });
    }
    let before: Rule | undefined;
    const { version: v, rules: after } = await rules.change(who(req), { op: 'put', name }, (current) => {
      before = current.find((r) => r.name === name);
      checkPreconditions(req, before ? ruleTag(before) : null);
      // A new rule without a place goes to its name-order place; its stage follows from there.
      const meta = placed(current, name, to, '/body/position');
      return { scripts: { ...Object.fromEntries(current.map((r) => [r.name, r.script])), [name]: script }, meta, ...expected(name, to) };
    });
    const rule = after.find((r) => r.name === name)!;
    await ctx.audit.record({ token: who(req), action: 'rules.put', method: req.method, path: req.url, resource: `rules/${name}`, before: before ? view(before) : null, after: { ...view(rule), version: v.id } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.put', rule: name, version: v.id }, `rule ${name} stored as version ${v.id}`);
    void reply.header('etag', ruleTag(rule));
    if (!before) void reply.header('location', `/v1/rules/${name}`);
    return reply.code(before ? 200 : 201).send({ ...view(rule), version: v.id });
  });

  app.patch('/v1/rules/:name', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    const to = parseInput(patchBody, req.body, 'body');
    let before: Rule | undefined;
    const { version: v, rules: after } = await rules.change(who(req), { op: 'settings', name }, (current) => {
      before = current.find((r) => r.name === name);
      checkPreconditions(req, before ? ruleTag(before) : null);
      if (!before) throw notFound(`rule ${name}`);
      return { scripts: Object.fromEntries(current.map((r) => [r.name, r.script])), meta: placed(current, name, to, '/body/position'), ...expected(name, to) };
    });
    const rule = after.find((r) => r.name === name)!;
    await ctx.audit.record({ token: who(req), action: 'rules.settings', method: req.method, path: req.url, resource: `rules/${name}`, before: before ? view(before) : null, after: { ...view(rule), version: v.id } });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.settings', rule: name, version: v.id }, `rule ${name}: stage ${rule.stage}, position ${rule.position}, ${rule.active ? 'active' : 'inactive'} in version ${v.id}`);
    void reply.header('etag', ruleTag(rule));
    return { ...view(rule), version: v.id };
  });

  app.delete('/v1/rules/:name', { config: { scope: 'write' } }, async (req, reply) => {
    const { name } = parseInput(nameParam, req.params, 'path');
    let before: Rule | undefined;
    const { version: v } = await rules.change(who(req), { op: 'delete', name }, (current) => {
      before = current.find((r) => r.name === name);
      checkPreconditions(req, before ? ruleTag(before) : null);
      if (!before) throw notFound(`rule ${name}`);
      const rest = current.filter((r) => r.name !== name);
      return { scripts: Object.fromEntries(rest.map((r) => [r.name, r.script])), meta: Object.fromEntries(rest.map((r) => [r.name, r])) };
    });
    await ctx.audit.record({ token: who(req), action: 'rules.delete', method: req.method, path: req.url, resource: `rules/${name}`, before: view(before!), after: null });
    ctx.log.info({ evt: 'api.change', token: who(req), action: 'rules.delete', rule: name, version: v.id }, `rule ${name} deleted in version ${v.id}`);
    return reply.code(204).header('x-rules-version', String(v.id)).send();
  });
}
