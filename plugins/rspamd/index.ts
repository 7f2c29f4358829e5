// rspamd: scans each message with rspamd's HTTP protocol at the data stage: POST /checkv2 with
// the message as the body and the envelope as request headers (IP, Helo, Hostname, From, one Rcpt
// per recipient, User, Queue-Id), answered with a JSON object (score, required_score, action,
// symbols, milter.add_headers / remove_headers, subject, messages.smtp_message). IP, Helo and
// Hostname are the client the message came from: the one a content filter named with XFORWARD
// when it hands mail back, not the filter (src/pipeline/origin.ts); unknown ones are left out.
//
// rspamd's action decides:
//   reject          → 550 5.7.1 (rspamd's smtp_message, or reject_text)
//   soft reject     → 451 4.7.1 (smtp_message, or soft_reject_text)
//   greylist        → 451 4.7.1 Greylisted, please try again later (when `greylist`)
//   rewrite subject → Subject replaced (rspamd's `subject`, or subject_template), then delivered
//   add header      → X-Spam-Flag: YES, then delivered
//   no action       → delivered
// Whatever the action, the headers rspamd asks for (milter.add_headers) are added, those it
// names in milter.remove_headers removed, and X-Spam-Score is set; the score feeds Sieve
// spamtest (scanner/results.ts). rspamd unreachable, slow (hook `timeout`), answering non-200
// or not JSON → the hook fails: 451 4.3.0, or `next` with on_error: fail-open.
// Metrics (besides the host's per-hook ones): postern_rspamd_score, a histogram of rspamd's
// scores, and postern_rspamd_actions_total{action}, the actions it asked for.
// Config keys read: host, port, socket, connect_timeout, password, max_size, greylist,
// subject_template, reject_text, soft_reject_text, spamtest_max, scan_relaying; global
// sieve.spamtest.max.
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { originClient } from '../../src/pipeline/origin.js';
import { next, reject, tempfail, type Verdict } from '../../src/pipeline/verdict.js';
import { describeEndpoint, endpointOf, ScannerUnavailable, type Endpoint } from '../../src/pipeline/scanner/connection.js';
import { recordScan } from '../../src/pipeline/scanner/results.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginCounter, pluginHistogram, SPAM_SCORE_BUCKETS } from '../../src/pipeline/metrics.js';
import { configSchema, type RspamdConfig } from './config.js';

export const RSPAMD_PORT = 11333;

const scores = pluginHistogram('postern_rspamd_score', 'Spam scores rspamd gave to scanned messages', [], SPAM_SCORE_BUCKETS);
/** rspamd's action names are a closed set; anything else is counted as "other" (bounded labels). */
const ACTIONS = new Set(['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject']);
const actions = pluginCounter('postern_rspamd_actions_total', 'Actions rspamd asked for, by action', ['action']);

interface State {
  endpoint: Endpoint;
  spamtestMax: number;
}

type Ctx = HookContext<RspamdConfig, State>;

/** The fields of a /checkv2 reply this plugin reads. */
export interface RspamdReply {
  /** True when a pre-filter decided without running every rule; `action` still applies. */
  is_skipped?: boolean;
  score: number;
  required_score?: number;
  action: string;
  symbols?: Record<string, { name?: string; score?: number }>;
  subject?: string;
  messages?: { smtp_message?: string };
  milter?: {
    add_headers?: Record<string, string | { value: string; order?: number } | { value: string; order?: number }[]>;
    remove_headers?: Record<string, number>;
  };
}

export default definePlugin({
  name: 'rspamd',
  config: configSchema,
  init({ config, global }): State {
    return { endpoint: endpointOf(config, RSPAMD_PORT), spamtestMax: config.spamtest_max ?? global.sieve.spamtest.max };
  },
  hooks: {
    data: check,
  },
});

async function check(ctx: Ctx): Promise<Verdict> {
  const c = ctx.config;
  if (!ctx.message || !ctx.tx) return next();
  if (!c.scan_relaying && (ctx.session.relaying || ctx.session.authUser)) {
    ctx.trace?.({ verdict: 'next', detail: 'not scanned: authenticated or trusted client' });
    return next();
  }
  const raw = await ctx.message.raw();
  if (raw.length > c.max_size) {
    ctx.trace?.({ verdict: 'next', detail: `not scanned: ${raw.length} octets, over max_size ${c.max_size}` });
    return next();
  }
  const started = performance.now();
  const r = await checkv2(ctx, raw);
  const ms = Math.round(performance.now() - started);
  recordScan(ctx.message, { spam: { score: r.score, max: ctx.state.spamtestMax, scanner: 'rspamd' } });
  scores.observe(ctx, {}, r.score);
  actions.inc(ctx, { action: ACTIONS.has(r.action) ? r.action : 'other' });
  const symbols = Object.keys(r.symbols ?? {});
  const summary = `action "${r.action}", score ${r.score.toFixed(2)}/${(r.required_score ?? 0).toFixed(2)}${symbols.length ? ` (${symbols.join(',')})` : ''}, ${ms}ms`;
  logEvent(ctx.log, 'info', 'plugin.rspamd.result', { action: r.action, score: r.score, symbols, queueId: ctx.tx.id, ms }, summary);
  const smtpText = oneLine(r.messages?.smtp_message);

  switch (r.action) {
    case 'reject':
      ctx.trace?.({ verdict: 'reject', detail: summary });
      return reject(550, '5.7.1', smtpText ?? c.reject_text);
    case 'soft reject':
      ctx.trace?.({ verdict: 'tempfail', detail: summary });
      return tempfail('4.7.1', smtpText ?? c.soft_reject_text);
    case 'greylist':
      if (c.greylist) {
        ctx.trace?.({ verdict: 'tempfail', detail: summary });
        return tempfail('4.7.1', 'Greylisted, please try again later');
      }
      break;
  }
  applyHeaders(ctx, r);
  if (r.action === 'rewrite subject') {
    const h = ctx.message.headers;
    const old = h.get('Subject')[0] ?? '';
    const subject = oneLine(r.subject) ?? c.subject_template.replaceAll('%s', old);
    h.remove('Subject');
    h.add('Subject', subject, 'bottom');
  }
  if (r.action === 'add header' || r.action === 'rewrite subject') {
    ctx.message.headers.remove('X-Spam-Flag');
    ctx.message.headers.add('X-Spam-Flag', 'YES');
  }
  ctx.trace?.({ verdict: 'next', detail: summary });
  return next();
}

function applyHeaders(ctx: Ctx, r: RspamdReply): void {
  const h = ctx.message!.headers;
  for (const name of Object.keys(r.milter?.remove_headers ?? {})) if (validName(name)) h.remove(name);
  h.remove('X-Spam-Score');
  const added: [string, string][] = [];
  for (const [name, v] of Object.entries(r.milter?.add_headers ?? {})) {
    if (!validName(name)) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      const value = oneLine(typeof one === 'string' ? one : one.value);
      if (value !== undefined) added.push([name, value]);
    }
  }
  added.push(['X-Spam-Score', r.score.toFixed(2)]);
  for (const [name, value] of added.reverse()) {
    // rspamd's own X-Spam-* of earlier hops would mislead a reader: one of each.
    if (name.toLowerCase() !== 'x-spam-score') h.remove(name);
    h.add(name, value);
  }
}

const validName = (n: string) => /^[!-9;-~]+$/.test(n);

/** Folded or multi-line text from rspamd as one line; undefined when empty. */
function oneLine(s: string | undefined): string | undefined {
  const t = s?.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return t ? t : undefined;
}

/** POST /checkv2; rejects with ScannerUnavailable when rspamd cannot give a usable answer. */
function checkv2(ctx: Ctx, body: Buffer): Promise<RspamdReply> {
  const ep = ctx.state.endpoint;
  const where = describeEndpoint(ep);
  const s = ctx.session;
  const origin = originClient(s);
  const tx = ctx.tx!;
  const headers: Record<string, string | string[]> = {
    'Content-Length': String(body.length),
    ...(origin.address ? { IP: origin.address } : {}),
    From: tx.mailFrom,
    'Queue-Id': tx.id,
    Rcpt: (tx.recipients.length ? tx.recipients : tx.envelope.recipients).map((r) => r.address),
    Pass: 'all',
  };
  if (origin.helo) headers.Helo = origin.helo;
  if (origin.hostname) headers.Hostname = origin.hostname;
  if (s.authUser) headers.User = s.authUser;
  if (ctx.config.password) headers.Password = ctx.config.password;
  return new Promise<RspamdReply>((resolve, rejectP) => {
    const req = request({
      ...(ep.kind === 'unix' ? { socketPath: ep.path } : { host: ep.host, port: ep.port }),
      method: 'POST',
      path: '/checkv2',
      headers,
      signal: ctx.signal,
    });
    const connectTimer = setTimeout(() => req.destroy(new Error(`connect to ${where} timed out after ${ctx.config.connect_timeout}ms`)), ctx.config.connect_timeout);
    req.on('socket', (sock) => {
      if (!sock.connecting) clearTimeout(connectTimer);
      else sock.once('connect', () => clearTimeout(connectTimer));
    });
    req.on('error', (e) => {
      clearTimeout(connectTimer);
      rejectP(new ScannerUnavailable('rspamd', `${where}: ${e.message}`, { cause: e }));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => rejectP(new ScannerUnavailable('rspamd', `${where}: ${e.message}`, { cause: e })));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) return rejectP(new ScannerUnavailable('rspamd', `${where} answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        try {
          const r = JSON.parse(text) as RspamdReply;
          // is_skipped (a pre-filter such as GTUBE decided) still carries the action to take.
          if (typeof r.score !== 'number' || typeof r.action !== 'string') throw new Error('no score or action');
          resolve(r);
        } catch (e) {
          rejectP(new ScannerUnavailable('rspamd', `${where} answered something that is not a /checkv2 reply: ${(e as Error).message}`));
        }
      });
    });
    req.end(body);
  });
}
