// Prometheus metrics of the plugin host and of the plugins (prom-client), in one registry that
// GET /metrics serves along with the gateway's and the API's own (src/api/metrics.ts).
//
// Recorded once, by the runner (runner.ts), for every hook of every plugin:
//   postern_plugin_duration_seconds{plugin,stage}        how long the hook took
//   postern_plugin_verdicts_total{plugin,stage,verdict}  what it answered: next, accept, reject,
//                                                        tempfail, discard, quarantine, reroute,
//                                                        error, timeout (the trace's names)
// Recorded by the plugins themselves (each names its own in its header comment), with the
// helpers below: names postern_<plugin>_…, created once per process however often the chain is
// loaded (a reload keeps counting where it was).
//
// A REST dry-run plays transactions through the same chain with `session.dryRun` set; every
// recording names the hook context (or session) it is for, and nothing is recorded for a
// dry-run, by the runner or by a plugin. (An explicit flag rather than AsyncLocalStorage: on
// Node 20 one AsyncLocalStorage.run() turns on promise hooks for the whole process, which
// halves the speed of every await from then on.)
import { Counter, Histogram, Registry } from 'prom-client';
import type { SessionInfo } from './plugin.js';

export const pluginRegistry = new Registry();

/** What a recording is for: a hook context, or anything else that carries the session. */
export interface Metered {
  session: Pick<SessionInfo, 'dryRun'>;
}

const metered = (on: Metered) => on.session.dryRun !== true;

type Labels<L extends string> = Partial<Record<L, string | number>>;

export interface PluginCounter<L extends string> {
  inc(on: Metered, labels: Labels<L>, by?: number): void;
}

export interface PluginHistogram<L extends string> {
  observe(on: Metered, labels: Labels<L>, value: number): void;
}

/** A counter in the plugin registry; asking twice for one name gives the same counter. */
export function pluginCounter<L extends string>(name: string, help: string, labelNames: readonly L[]): PluginCounter<L> {
  const c = (pluginRegistry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter<L>({ name, help, labelNames, registers: [pluginRegistry] });
  return {
    inc(on, labels, by = 1) {
      if (metered(on)) c.inc(labels, by);
    },
  };
}

/** A histogram in the plugin registry; asking twice for one name gives the same histogram. */
export function pluginHistogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]): PluginHistogram<L> {
  const h = (pluginRegistry.getSingleMetric(name) as Histogram<L> | undefined) ?? new Histogram<L>({ name, help, labelNames, buckets, registers: [pluginRegistry] });
  return {
    observe(on, labels, value) {
      if (metered(on)) h.observe(labels, value);
    },
  };
}

/** Score buckets for the spam scanners: fine around the usual thresholds (5, 10, 15), up to GTUBE's 1000. */
export const SPAM_SCORE_BUCKETS = [-5, 0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, 100, 1000];

const hookSeconds = pluginHistogram('postern_plugin_duration_seconds', 'Plugin hook run time, per plugin and stage', ['plugin', 'stage'], [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]);
const verdicts = pluginCounter('postern_plugin_verdicts_total', 'What plugin hooks answered, per plugin, stage and verdict (error and timeout: the hook failed)', ['plugin', 'stage', 'verdict']);

/** Called by the runner once per hook run. */
export function recordHook(on: Metered, plugin: string, stage: string, verdict: string, ms: number): void {
  hookSeconds.observe(on, { plugin, stage }, ms / 1000);
  verdicts.inc(on, { plugin, stage, verdict });
}
