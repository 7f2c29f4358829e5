// Prometheus metrics (prom-client), served at GET /metrics in the text exposition format.
//   postern_messages_total{outcome,code}        transactions that ended at DATA, by outcome (queued,
//                                               delivered, rerouted, quarantined, discarded,
//                                               rejected, tempfail, error) and reply code
//   postern_plugin_duration_seconds{plugin,stage} time each plugin hook took, and
//   postern_plugin_verdicts_total{plugin,stage,verdict} and each plugin's own metrics: recorded
//                                               by the plugin host (src/pipeline/metrics.ts)
//   postern_rule_hits_total{rule,verdict}       Sieve rules (and other named rules) that acted
//   postern_queue_targets{state}                queued deliveries by state (pending, deferred, held, …)
//   postern_api_requests_total{method,route,status}
//   postern_api_request_duration_seconds{method,route}
// The message counter lives in a registry of its own that the SMTP side writes to
// (countTransaction), whether or not the API listener runs; the API registry is per app.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ManagedQueue } from '../queue/manager.js';
import type { TraceEntry } from '../pipeline/types.js';
import { pluginRegistry } from '../pipeline/metrics.js';

export const gatewayRegistry = new Registry();

const messages = new Counter({
  name: 'postern_messages_total',
  help: 'SMTP/LMTP transactions that reached the end of DATA, by outcome and reply code',
  labelNames: ['outcome', 'code'] as const,
  registers: [gatewayRegistry],
});

const ruleHits = new Counter({ name: 'postern_rule_hits_total', help: 'Rules that acted, by verdict', labelNames: ['rule', 'verdict'] as const, registers: [gatewayRegistry] });

/** Since-start counts for GET /v1/stats (this process only). */
const since = new Date().toISOString();
const outcomes = new Map<string, number>();
const plugins = new Map<string, { plugin: string; stage: string; calls: number; total_ms: number; max_ms: number }>();
const rules = new Map<string, { rule: string; hits: number; verdicts: Record<string, number> }>();

/** Called once per transaction by the SMTP session (smtp.transaction), with its trace. */
export function countTransaction(outcome: string, code: number, trace: readonly TraceEntry[] = []): void {
  messages.inc({ outcome, code: String(code) });
  outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  for (const t of trace) {
    if (t.rule !== undefined) {
      // A plugin's own entry: a rule that acted.
      ruleHits.inc({ rule: t.rule, verdict: t.verdict });
      let r = rules.get(t.rule);
      if (!r) rules.set(t.rule, (r = { rule: t.rule, hits: 0, verdicts: {} }));
      r.hits++;
      r.verdicts[t.verdict] = (r.verdicts[t.verdict] ?? 0) + 1;
      continue;
    }
    const key = `${t.plugin}\0${t.stage}`;
    let p = plugins.get(key);
    if (!p) plugins.set(key, (p = { plugin: t.plugin, stage: t.stage, calls: 0, total_ms: 0, max_ms: 0 }));
    p.calls++;
    p.total_ms += t.ms;
    p.max_ms = Math.max(p.max_ms, t.ms);
  }
}

/** What GET /v1/stats answers: counts since this process started. */
export function gatewayStats() {
  return {
    since,
    transactions: Object.fromEntries([...outcomes].sort()),
    plugins: [...plugins.values()]
      .sort((a, b) => a.plugin.localeCompare(b.plugin) || a.stage.localeCompare(b.stage))
      .map((p) => ({ plugin: p.plugin, stage: p.stage, calls: p.calls, avg_ms: +(p.total_ms / p.calls).toFixed(3), max_ms: p.max_ms })),
    rules: [...rules.values()].sort((a, b) => a.rule.localeCompare(b.rule)).map((r) => ({ ...r, verdicts: { ...r.verdicts } })),
  };
}

export class ApiMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly latency: Histogram<'method' | 'route'>;

  constructor(queue?: Pick<ManagedQueue, 'entries'>) {
    this.requests = new Counter({ name: 'postern_api_requests_total', help: 'REST API requests', labelNames: ['method', 'route', 'status'], registers: [this.registry] });
    this.latency = new Histogram({
      name: 'postern_api_request_duration_seconds',
      help: 'REST API request latency',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [this.registry],
    });
    new Gauge({
      name: 'postern_queue_targets',
      help: 'Deliveries waiting in the queue, by state (a message has one per recipient and folder)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const counts: Record<string, number> = { pending: 0, deferred: 0, held: 0 };
        for (const e of queue?.entries() ?? []) {
          if (!e.targets) counts.pending! += e.envelope.recipients.length;
          else for (const t of e.targets) if (t.status !== 'done' && t.status !== 'failed') counts[t.status] = (counts[t.status] ?? 0) + 1;
        }
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  async text(): Promise<string> {
    return (await gatewayRegistry.metrics()) + (await pluginRegistry.metrics()) + (await this.registry.metrics());
  }
}
