// The runner: chain order, first decisive verdict, deadlines, error mapping, fail-open, traces,
// notes, observers and close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { z } from 'zod';
import { definePlugin, type PluginDefinition, type SessionInfo, type Stage } from '../../../src/pipeline/plugin.js';
import { createPipeline, checkVerdict, type AnyPluginDefinition, type LoadedPlugin } from '../../../src/pipeline/runner.js';
import { accept, next, reject, tempfail, discard, quarantine, type Verdict } from '../../../src/pipeline/verdict.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { fakeDirectory, unconfiguredResolver, DEFAULT_TEST_SESSION } from '../../../src/pipeline/harness.js';
import type { StageInput } from '../../../src/pipeline/types.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

function entry(def: PluginDefinition<z.ZodType, unknown>, over: Partial<LoadedPlugin> = {}): LoadedPlugin {
  return { name: def.name, def: def as AnyPluginDefinition, config: {}, state: undefined, timeoutMs: 1000, onError: 'tempfail', ...over };
}

function chain(plugins: LoadedPlugin[]) {
  const store = new MemoryStore();
  const { log, lines } = capture();
  const p = createPipeline(plugins, { store, directory: fakeDirectory(), dns: unconfiguredResolver(), log });
  return { p, lines, store };
}

const input = (over: Partial<StageInput> = {}): StageInput => ({ session: { ...DEFAULT_TEST_SESSION } as SessionInfo, notes: new Map(), ...over });

const plugin = (name: string, hooks: PluginDefinition<z.ZodType, unknown>['hooks'], extra: Partial<PluginDefinition<z.ZodType, unknown>> = {}) =>
  definePlugin<z.ZodType, unknown>({ name, config: z.object({}), hooks, ...extra });

test('runs hooks in chain order; the first decisive verdict ends the stage', async () => {
  const ran: string[] = [];
  const mk = (n: string, v: Verdict) => entry(plugin(n, { mail: async () => (ran.push(n), v) }));
  const { p } = chain([mk('a', next()), mk('b', reject(550, '5.7.1', 'No thanks')), mk('c', accept())]);
  const r = await p.run('mail', input());
  assert.deepEqual(ran, ['a', 'b']);
  assert.deepEqual(r.verdict, reject(550, '5.7.1', 'No thanks'));
  assert.deepEqual(
    r.trace.map((t) => [t.stage, t.plugin, t.verdict, t.code, t.enhanced, t.detail]),
    [
      ['mail', 'a', 'next', undefined, undefined, undefined],
      ['mail', 'b', 'reject', 550, '5.7.1', 'No thanks'],
    ],
  );
  assert.ok(r.trace.every((t) => typeof t.ms === 'number' && t.ms >= 0));
  await p.close();
});

test('no decisive verdict means next; plugins without the hook are skipped; has() reflects hooks', async () => {
  const { p } = chain([entry(plugin('a', { connect: async () => next() })), entry(plugin('b', { rcpt: async () => accept() }))]);
  const r = await p.run('connect', input());
  assert.deepEqual(r.verdict, next());
  assert.deepEqual(r.trace.map((t) => t.plugin), ['a']);
  assert.equal(p.has('connect'), true);
  assert.equal(p.has('rcpt'), true);
  assert.equal(p.has('data'), false);
  assert.deepEqual(p.names, ['a', 'b']);
  await p.close();
});

test('a throw is 451 4.3.0 with generic text; the reason is in the trace and the log', async () => {
  const { p, lines } = chain([
    entry(plugin('boom', { helo: async () => { throw new Error('spamd said: connection refused'); } })),
    entry(plugin('after', { helo: async () => accept() })),
  ]);
  const r = await p.run('helo', input());
  assert.deepEqual(r.verdict, tempfail('4.3.0', 'Policy check unavailable', 451));
  assert.equal(r.trace.length, 1);
  assert.equal(r.trace[0]!.verdict, 'error');
  assert.equal(r.trace[0]!.code, 451);
  assert.match(r.trace[0]!.detail!, /connection refused/);
  const err = lines.find((l) => l.evt === 'plugin.error');
  assert.ok(err && err.plugin === 'boom' && err.level === 50);
  await p.close();
});

test('a synchronous throw from a non-async hook is caught too', async () => {
  const hook = (() => { throw new TypeError('sync'); }) as unknown as () => Promise<Verdict>;
  const { p } = chain([entry(plugin('sync', { mail: hook }))]);
  const r = await p.run('mail', input());
  assert.equal(r.verdict.kind, 'tempfail');
  assert.match(r.trace[0]!.detail!, /sync/);
  await p.close();
});

test('timeout: 451, signal aborted, a late resolution is logged and ignored', async () => {
  let seen: AbortSignal | undefined;
  let resolveLate!: (v: Verdict) => void;
  const { p, lines } = chain([
    entry(
      plugin('slow', {
        rcpt: (ctx) => {
          seen = ctx.signal;
          return new Promise<Verdict>((r) => (resolveLate = r));
        },
      }),
      { timeoutMs: 50 },
    ),
  ]);
  const t0 = Date.now();
  const r = await p.run('rcpt', input({ rcpt: { address: 'x@example.test' } }));
  assert.ok(Date.now() - t0 >= 45);
  assert.equal(r.verdict.kind, 'tempfail');
  assert.equal(r.trace[0]!.verdict, 'timeout');
  assert.equal(r.trace[0]!.rcpt, 'x@example.test');
  assert.match(r.trace[0]!.detail!, /timed out after 50ms/);
  assert.equal(seen?.aborted, true);
  assert.ok(lines.some((l) => l.evt === 'plugin.timeout' && l.level === 40));
  resolveLate(accept());
  await new Promise((res) => setImmediate(res));
  const dbl = lines.find((l) => l.evt === 'plugin.double_resolution');
  assert.ok(dbl, 'second resolution logged');
  assert.equal(dbl.late, 'accept');
  await p.close();
});

test('on_error fail-open: a throw or timeout counts as next and the chain goes on', async () => {
  const { p } = chain([
    entry(plugin('flaky', { data: async () => { throw new Error('down'); } }), { onError: 'fail-open' }),
    entry(plugin('stuck', { data: () => new Promise<Verdict>(() => {}) }), { onError: 'fail-open', timeoutMs: 20 }),
    entry(plugin('decider', { data: async () => discard('test') })),
  ]);
  const r = await p.run('data', input());
  assert.deepEqual(r.verdict, discard('test'));
  assert.deepEqual(r.trace.map((t) => t.verdict), ['error', 'timeout', 'discard']);
  assert.match(r.trace[0]!.detail!, /fail-open/);
  assert.equal(r.trace[0]!.code, undefined);
  await p.close();
});

test('the caller aborting (client gone) stops the stage, even with fail-open', async () => {
  const ctl = new AbortController();
  let hookSignal: AbortSignal | undefined;
  const { p } = chain([
    entry(plugin('waits', { mail: (ctx) => ((hookSignal = ctx.signal), new Promise<Verdict>(() => {})) }), { onError: 'fail-open' }),
    entry(plugin('never', { mail: async () => accept() })),
  ]);
  setTimeout(() => ctl.abort(new Error('client closed')), 20);
  const r = await p.run('mail', input({ signal: ctl.signal }));
  assert.equal(r.verdict.kind, 'tempfail');
  assert.deepEqual(r.trace.map((t) => t.plugin), ['waits']);
  assert.match(r.trace[0]!.detail!, /client went away/);
  assert.equal(hookSignal?.aborted, true);
  // Already aborted: nothing runs.
  const again = await p.run('mail', input({ signal: ctl.signal }));
  assert.equal(again.verdict.kind, 'tempfail');
  await p.close();
});

test('malformed verdicts are failures (table)', async () => {
  const cases: [Stage, unknown, RegExp][] = [
    ['mail', undefined, /not a verdict/],
    ['mail', { kind: 'maybe' }, /unknown verdict kind/],
    ['mail', { kind: 'reject', code: 451, enhanced: '4.7.1', text: 'x' }, /reject with reply code 451/],
    ['mail', { kind: 'reject', code: 550, enhanced: '4.7.1', text: 'x' }, /enhanced code 4.7.1/],
    ['mail', { kind: 'tempfail', code: 451, enhanced: '5.7.1', text: 'x' }, /enhanced code/],
    ['mail', { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'a\r\n250 ok' }, /single line/],
    ['rcpt', discard(), /discard at the rcpt stage/],
    ['connect', quarantine('Junk'), /quarantine at the connect stage/],
    ['data', quarantine(''), /without a folder/],
    ['data', { kind: 'reroute', refuse: { 'a@x.test': { code: 250, enhanced: '2.0.0', text: 'ok' } } }, /refusing a recipient: reject with reply code 250/],
    ['data', { kind: 'reroute', refuse: { 'a@x.test': { code: 550, enhanced: '5.7.1', text: 'a\r\nb' } } }, /refusing a recipient: .*single line/],
    ['data', { kind: 'reroute', copies: { 'a@x.test': [{ op: 'add', name: 'X-A', value: 'a\r\nBcc: b', where: 'top' }] } }, /bad header edits/],
    ['data', { kind: 'reroute', copies: { 'a@x.test': [{ op: 'rename', name: 'X-A' }] } }, /bad header edits/],
  ];
  for (const [stage, v, re] of cases) {
    assert.match(checkVerdict(v, stage) ?? '', re, JSON.stringify(v));
    const { p } = chain([entry(plugin('bad', { [stage]: async () => v as Verdict }))]);
    const r = await p.run(stage, input());
    assert.equal(r.verdict.kind, 'tempfail', JSON.stringify(v));
    assert.match(r.trace[0]!.detail!, re);
    await p.close();
  }
  const perRecipient: Verdict = {
    kind: 'reroute',
    refuse: { 'a@x.test': { code: 550, enhanced: '5.7.1', text: 'refused' } },
    copies: { 'b@x.test': [{ op: 'add', name: 'X-B', value: 'b', where: 'bottom' }, { op: 'remove', name: 'X-Drop', index: 0 }] },
  };
  for (const [stage, v] of [['data', quarantine('Junk', 'spam')], ['queue', discard()], ['rcpt', tempfail('4.7.1', 'Greylisted', 450)], ['connect', reject(554, '5.7.1', 'no')], ['data', perRecipient]] as const) {
    assert.equal(checkVerdict(v, stage), null);
  }
});

test('notes: one map per plugin name, kept by the caller across stages', async () => {
  const { p } = chain([
    entry(plugin('a', { connect: async (ctx) => ((ctx.notes.n = 1), next()), mail: async (ctx) => ((ctx.notes.n = (ctx.notes.n as number) + 1), next()) })),
    entry(plugin('b', { connect: async (ctx) => (assert.equal(ctx.notes.n, undefined), (ctx.notes.mine = true), next()) })),
  ]);
  const notes = new Map<string, Record<string, unknown>>();
  await p.run('connect', input({ notes }));
  await p.run('mail', input({ notes }));
  assert.deepEqual(notes.get('a'), { n: 2 });
  assert.deepEqual(notes.get('b'), { mine: true });
  await p.close();
});

test('hooks see config, state, session changes and the shared store', async () => {
  const { p, store } = chain([
    entry(
      plugin('ctx', {
        connect: async (ctx) => {
          assert.deepEqual(ctx.config, { k: 1 });
          assert.equal(ctx.state, 'S');
          assert.equal(ctx.plugin, 'ctx');
          ctx.session.relaying = true;
          await ctx.store.set('seen', ctx.session.remoteAddress);
          return next();
        },
      }),
      { config: { k: 1 }, state: 'S' },
    ),
  ]);
  const i = input();
  await p.run('connect', i);
  assert.equal(i.session.relaying, true);
  assert.equal(await store.get('seen'), '192.0.2.1');
  await p.close();
});

test('observers: errors and timeouts are swallowed and logged; others still run', async () => {
  const got: string[] = [];
  const { p, lines } = chain([
    entry(plugin('o1', { delivered: async () => { throw new Error('observer broke'); } })),
    entry(plugin('o2', { delivered: () => new Promise<void>(() => {}) }), { timeoutMs: 30 }),
    entry(plugin('o3', { delivered: async (ev) => void got.push(ev.recipient) })),
  ]);
  await p.observe('delivered', { queueId: 'Q1', recipient: 'a@example.test' });
  await p.observe('bounced', { queueId: 'Q1', recipient: 'a@example.test' });
  assert.deepEqual(got, ['a@example.test']);
  assert.ok(lines.some((l) => l.evt === 'plugin.error' && l.plugin === 'o1'));
  assert.ok(lines.some((l) => l.evt === 'plugin.timeout' && l.plugin === 'o2'));
  await p.close();
});

test('close() calls every close once, in reverse order, even when one throws', async () => {
  const closed: string[] = [];
  const mk = (n: string, fail = false) =>
    entry(plugin(n, { connect: async () => next() }, { close: (s: unknown) => { closed.push(`${n}:${String(s)}`); if (fail) throw new Error('x'); } }), { state: n.toUpperCase() });
  const { p, lines } = chain([mk('a'), mk('b', true), mk('c')]);
  await Promise.all([p.close(), p.close()]);
  assert.deepEqual(closed, ['c:C', 'b:B', 'a:A']);
  assert.ok(lines.some((l) => l.evt === 'plugin.error' && l.plugin === 'b'));
  await assert.rejects(p.run('connect', input()), /closed/);
});

test('every verdict is logged as plugin.verdict at debug', async () => {
  const { p, lines } = chain([entry(plugin('v', { rcpt: async () => tempfail('4.7.1', 'Greylisted', 450) }))]);
  await p.run('rcpt', input({ rcpt: { address: 'r@example.test' } }));
  const v = lines.find((l) => l.evt === 'plugin.verdict');
  assert.ok(v);
  assert.equal(v.level, 20);
  assert.equal(v.verdict, 'tempfail');
  assert.equal(v.code, 450);
  assert.equal(v.rcpt, 'r@example.test');
  assert.equal(v.plugin, 'v');
  await p.close();
});

test('ctx.log and ctx.signal: read late they still abort on the deadline; a plugin may replace both', async () => {
  let lateSignal: AbortSignal | undefined;
  const { p, lines } = chain([
    entry(
      plugin('replaces', {
        mail: async (ctx) => {
          ctx.log = ctx.log.child({ mine: true });
          const own = new AbortController();
          ctx.signal = own.signal;
          assert.equal(ctx.signal, own.signal);
          ctx.log.info({ evt: 'test.own_log' }, 'from the plugin');
          return next();
        },
      }),
    ),
    entry(
      plugin('late-reader', {
        rcpt: async (ctx) => {
          // The signal is first read after the deadline has passed.
          await new Promise((r) => setTimeout(r, 80));
          lateSignal = ctx.signal;
          return next();
        },
      }),
      { timeoutMs: 30 },
    ),
  ]);
  assert.equal((await p.run('mail', input())).verdict.kind, 'next');
  assert.ok(lines.some((l) => l.evt === 'test.own_log' && l.mine === true));
  const r = await p.run('rcpt', input({ rcpt: { address: 'x@example.test' } }));
  assert.equal(r.trace[0]!.verdict, 'timeout');
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(lateSignal?.aborted, true, 'a signal made after the deadline starts aborted');
  await p.close();
});
