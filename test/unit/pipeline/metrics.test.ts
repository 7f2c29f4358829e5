// The plugin host's Prometheus metrics (src/pipeline/metrics.ts): every hook run is timed and its
// verdict counted by plugin, stage and verdict (error and timeout for failed hooks, fail-open
// included); a plugin's own metrics are created once per name; nothing is recorded for a session
// marked dryRun (the REST dry-run), by the runner or by a plugin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { definePlugin } from '../../../src/pipeline/plugin.js';
import { testPlugin } from '../../../src/pipeline/harness.js';
import { next, reject } from '../../../src/pipeline/verdict.js';
import { pluginCounter, pluginRegistry } from '../../../src/pipeline/metrics.js';
import { grew, parseExposition, type Scrape } from '../../helpers/prometheus.js';

const snapshot = async (): Promise<Scrape> => parseExposition(await pluginRegistry.metrics());

const own = pluginCounter('postern_metricstest_calls_total', 'Calls of the metrics test plugin', ['kind']);

const probe = definePlugin({
  name: 'metrics-probe',
  config: z.object({}).strict(),
  hooks: {
    async mail(ctx) {
      own.inc(ctx, { kind: 'mail' });
      return ctx.tx?.mailFrom === 'bad@example.test' ? reject(550, '5.7.1', 'No') : next();
    },
    async rcpt(ctx) {
      if (ctx.rcpt?.address === 'slow@example.test') await new Promise((r) => setTimeout(r, 200));
      if (ctx.rcpt?.address === 'throw@example.test') throw new Error('boom');
      return next();
    },
  },
});

test('each hook run: its time by plugin and stage, its verdict by plugin, stage and verdict', async () => {
  const h = testPlugin(probe, { timeout: '50ms' });
  const b = await snapshot();
  await h.run('mail', { tx: { mailFrom: 'good@example.test' } });
  await h.run('mail', { tx: { mailFrom: 'bad@example.test' } });
  await h.run('rcpt', { tx: { mailFrom: 'good@example.test' }, rcpt: 'slow@example.test' });
  await h.run('rcpt', { tx: { mailFrom: 'good@example.test' }, rcpt: 'throw@example.test' });
  await h.close();
  const a = await snapshot();
  const v = (stage: string, verdict: string) => grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'metrics-probe', stage, verdict });
  assert.equal(v('mail', 'next'), 1);
  assert.equal(v('mail', 'reject'), 1);
  assert.equal(v('rcpt', 'timeout'), 1);
  assert.equal(v('rcpt', 'error'), 1);
  assert.equal(grew(b, a, 'postern_plugin_duration_seconds_count', { plugin: 'metrics-probe', stage: 'mail' }), 2);
  assert.equal(grew(b, a, 'postern_plugin_duration_seconds_count', { plugin: 'metrics-probe', stage: 'rcpt' }), 2);
  // The slow hook's time is its deadline's, not 0: it lands above the 10 ms bucket.
  assert.equal(grew(b, a, 'postern_plugin_duration_seconds_bucket', { plugin: 'metrics-probe', stage: 'rcpt', le: '0.01' }), 1, 'only the throw is that fast');
  assert.equal(grew(b, a, 'postern_metricstest_calls_total', { kind: 'mail' }), 2);
});

test('a fail-open failure still counts as an error', async () => {
  const h = testPlugin(probe, { on_error: 'fail-open' });
  const b = await snapshot();
  const r = await h.run('rcpt', { tx: { mailFrom: 'good@example.test' }, rcpt: 'throw@example.test' });
  await h.close();
  assert.equal(r.verdict.kind, 'next');
  assert.equal(grew(b, await snapshot(), 'postern_plugin_verdicts_total', { plugin: 'metrics-probe', stage: 'rcpt', verdict: 'error' }), 1);
});

test('a dry-run session: neither the runner nor the plugin records anything', async () => {
  const h = testPlugin(probe, {});
  const b = await snapshot();
  h.newConnection({ dryRun: true });
  await h.run('mail', { tx: { mailFrom: 'bad@example.test' } });
  const a = await snapshot();
  assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'metrics-probe', stage: 'mail', verdict: 'reject' }), 0);
  assert.equal(grew(b, a, 'postern_metricstest_calls_total', { kind: 'mail' }), 0);
  // A real session counts again.
  h.newConnection();
  await h.run('mail', { tx: { mailFrom: 'bad@example.test' } });
  assert.equal(grew(a, await snapshot(), 'postern_plugin_verdicts_total', { plugin: 'metrics-probe', stage: 'mail', verdict: 'reject' }), 1);
  await h.close();
});

test('asking twice for one metric name gives the same series (a chain reload keeps counting)', async () => {
  const again = pluginCounter('postern_metricstest_calls_total', 'Calls of the metrics test plugin', ['kind']);
  const b = await snapshot();
  const on = { session: {} };
  again.inc(on, { kind: 'reload' });
  own.inc(on, { kind: 'reload' });
  assert.equal(grew(b, await snapshot(), 'postern_metricstest_calls_total', { kind: 'reload' }), 2);
});
