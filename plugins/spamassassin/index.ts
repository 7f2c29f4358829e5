// spamassassin: scores each message with spamd at the data stage (protocol in spamd.ts), over TCP
// or a unix socket, the message streamed and capped at `max_size`.
//
//   score ≥ reject_score      → 550 5.7.1 Message refused as spam (reject_text)
//   score ≥ quarantine_score  → delivered into `quarantine_folder` (default Junk), headers added
//   score ≥ tag_score         → X-Spam-Flag: YES, X-Spam-Status: Yes, … (tag_score absent: spamd's
//                               own verdict, i.e. its required_score)
//   otherwise                 → X-Spam-Status: No, score=… ; X-Spam-Score: <score>
// Headers (add_headers): X-Spam-Status "Yes|No, score=S required=R tests=A,B", X-Spam-Score,
// X-Spam-Flag (tagged only), X-Spam-Report (command report); with command process the X-Spam-*
// headers SpamAssassin wrote are copied instead of ours (plus X-Spam-Score). Headers of those
// names that came with the message are removed first, so a sender cannot forge a verdict.
// The score feeds Sieve spamtest/spamtestplus (scanner/results.ts; scaled against spamtest_max,
// default the global sieve.spamtest.max, as the X-Spam-Score header fallback is).
// Not scanned: messages over max_size, and (unless scan_relaying) mail from authenticated users
// and trusted networks; both traced. spamd unreachable, too slow (hook `timeout`) or answering
// an error → the hook fails: 451 4.3.0, or `next` with on_error: fail-open.
// Metrics (besides the host's per-hook ones): postern_spamassassin_score, a histogram of the
// scores spamd gave (messages not scanned are not in it).
// Config keys read: host, port, socket, connect_timeout, command, user, max_size, tag_score,
// quarantine_score, quarantine_folder, reject_score, reject_text, add_headers, spamtest_max,
// scan_relaying; global sieve.spamtest.max.
import { performance } from 'node:perf_hooks';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, quarantine, reject, type Verdict } from '../../src/pipeline/verdict.js';
import { createMessage } from '../../src/pipeline/message.js';
import { describeEndpoint, endpointOf, type Endpoint } from '../../src/pipeline/scanner/connection.js';
import { recordScan } from '../../src/pipeline/scanner/results.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginHistogram, SPAM_SCORE_BUCKETS } from '../../src/pipeline/metrics.js';
import { configSchema, type SpamassassinConfig } from './config.js';
import { spamdRequest, type SpamdCommand, type SpamdResult } from './spamd.js';

export const SPAMD_PORT = 783;

const scores = pluginHistogram('postern_spamassassin_score', 'Spam scores spamd gave to scanned messages', [], SPAM_SCORE_BUCKETS);

/** The headers this plugin writes (and removes from incoming mail). */
const OWN_HEADERS = ['X-Spam-Status', 'X-Spam-Score', 'X-Spam-Flag', 'X-Spam-Report', 'X-Spam-Level', 'X-Spam-Checker-Version'];

interface State {
  endpoint: Endpoint;
  spamtestMax: number;
}

type Ctx = HookContext<SpamassassinConfig, State>;

export default definePlugin({
  name: 'spamassassin',
  config: configSchema,
  init({ config, global }): State {
    return { endpoint: endpointOf(config, SPAMD_PORT), spamtestMax: config.spamtest_max ?? global.sieve.spamtest.max };
  },
  hooks: {
    data: check,
  },
});

async function check(ctx: Ctx): Promise<Verdict> {
  const c = ctx.config;
  if (!ctx.message) return next();
  if (!c.scan_relaying && (ctx.session.relaying || ctx.session.authUser)) {
    ctx.trace?.({ verdict: 'next', detail: 'not scanned: authenticated or trusted client' });
    return next();
  }
  const raw = await ctx.message.raw();
  if (raw.length > c.max_size) {
    logEvent(ctx.log, 'info', 'plugin.spamassassin.skipped', { size: raw.length, max_size: c.max_size }, 'message over max_size: not scanned');
    ctx.trace?.({ verdict: 'next', detail: `not scanned: ${raw.length} octets, over max_size ${c.max_size}` });
    return next();
  }
  const started = performance.now();
  const command = c.command.toUpperCase() as SpamdCommand;
  const r = await spamdRequest(ctx.state.endpoint, command, raw, { user: c.user, connectTimeoutMs: c.connect_timeout, signal: ctx.signal });
  const ms = Math.round(performance.now() - started);

  scores.observe(ctx, {}, r.score);
  const tagged = c.tag_score !== undefined ? r.score >= c.tag_score : r.spam;
  const required = c.tag_score ?? r.required;
  recordScan(ctx.message, { spam: { score: r.score, max: ctx.state.spamtestMax, scanner: 'spamassassin' } });
  const summary = `score ${fmt(r.score)}/${fmt(required)}${r.symbols.length ? ` (${r.symbols.join(',')})` : ''}, spamd ${describeEndpoint(ctx.state.endpoint)}, ${ms}ms`;
  logEvent(ctx.log, 'info', 'plugin.spamassassin.result', { score: r.score, required, tagged, symbols: r.symbols, queueId: ctx.tx?.id, ms }, summary);

  if (c.reject_score !== undefined && r.score >= c.reject_score) {
    ctx.trace?.({ verdict: 'reject', detail: summary });
    return reject(550, '5.7.1', c.reject_text.replaceAll('{score}', fmt(r.score)));
  }
  if (c.add_headers) writeHeaders(ctx, r, tagged, required);
  if (c.quarantine_score !== undefined && r.score >= c.quarantine_score) {
    ctx.trace?.({ verdict: 'quarantine', detail: `${summary} → ${c.quarantine_folder}` });
    return quarantine(c.quarantine_folder, `spamassassin: score ${fmt(r.score)}`);
  }
  ctx.trace?.({ verdict: 'next', detail: `${tagged ? 'tagged' : 'clean'}: ${summary}` });
  return next();
}

function writeHeaders(ctx: Ctx, r: SpamdResult, tagged: boolean, required: number): void {
  const h = ctx.message!.headers;
  for (const name of OWN_HEADERS) h.remove(name);
  // Added at the top, so the last one added comes first: add in reverse reading order.
  const fields: [string, string][] = [];
  if (r.message) {
    // PROCESS: SpamAssassin's own X-Spam-* headers, in its order.
    for (const [name, value] of createMessage(r.message).headers.list()) if (/^X-Spam-/i.test(name) && value !== '') fields.push([name, value]);
  } else {
    if (tagged) fields.push(['X-Spam-Flag', 'YES']);
    fields.push(['X-Spam-Status', `${tagged ? 'Yes' : 'No'}, score=${fmt(r.score)} required=${fmt(required)}${r.symbols.length ? ` tests=${r.symbols.join(',')}` : ''}`]);
    if (r.report) fields.push(['X-Spam-Report', r.report.replace(/\s*\r?\n\s*/g, ' ').trim()]);
  }
  fields.push(['X-Spam-Score', fmt(r.score)]);
  for (const [name, value] of fields.reverse()) h.add(name, value);
}

/** SpamAssassin prints scores with one decimal. */
function fmt(n: number): string {
  return n.toFixed(1);
}
