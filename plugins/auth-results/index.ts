// auth-results: verifies SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617)
// with mailauth at the data stage, writes one Authentication-Results header (RFC 8601) naming
// us (authserv_id, default `hostname`) plus Received-SPF (RFC 7208 §9.1), and applies the
// sender domain's DMARC policy:
//
//   dmarc=fail, p=reject      → 550 5.7.1 Rejected by the DMARC policy of <domain>
//                               (dmarc_reject: reject | quarantine | none)
//   dmarc=fail, p=quarantine  → delivered into quarantine_folder (dmarc_quarantine)
//   pct= below 100            → the policy applies to that share of failing mail (honour_pct)
//
// Authentication-Results fields that arrive with our own authserv-id are removed first (RFC 8601
// §5: a receiver must not trust results it did not write). DNS goes to the configured
// `dns.servers` (node's resolver; mailauth wants its NXDOMAIN/NODATA errors, which the shared
// Resolver turns into empty answers). The results are in the header, which users' Sieve scripts
// can test, in the gateway Sieve's environment (vnd.postern.spf, .dkim, .dmarc, .arc; via
// scanner/results.ts) and in the trace (one entry: spf=… dkim=… dmarc=… arc=…).
// Not checked: authenticated users and trusted networks (unless check_relaying).
// SPF is asked about the client the message came from: for mail a content filter hands back, the
// one it named with XFORWARD, with that client's HELO (src/pipeline/origin.ts); when XFORWARD left
// its address unknown there is nothing to check SPF against, and the message is not checked.
// Metrics (besides the host's per-hook ones): postern_authresults_results_total{method,result},
// one per checked message and method (spf, dkim, dmarc, arc) with its RFC 8601 result name.
// Config keys read: authserv_id, dmarc_reject, dmarc_quarantine, quarantine_folder, honour_pct,
// check_relaying, arc, min_rsa_bits, received_spf; global hostname, dns.servers/timeout/tries.
import { Resolver as NodeResolver } from 'node:dns/promises';
import { authenticate } from 'mailauth';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { originClient } from '../../src/pipeline/origin.js';
import { next, quarantine, reject, type Verdict } from '../../src/pipeline/verdict.js';
import { createMessage } from '../../src/pipeline/message.js';
import { recordScan } from '../../src/pipeline/scanner/results.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginCounter } from '../../src/pipeline/metrics.js';
import { configSchema, type AuthResultsConfig } from './config.js';

type DnsLookup = (name: string, rrtype: string) => Promise<unknown>;

interface State {
  authservId: string;
  resolver: DnsLookup;
  /** Sampling for pct= (tests replace it). */
  random: () => number;
}

type Ctx = HookContext<AuthResultsConfig, State>;

const results = pluginCounter('postern_authresults_results_total', 'SPF, DKIM, DMARC and ARC results of checked messages, by method and result', ['method', 'result']);
/** RFC 8601 §2.7 result names; anything else a library reports is counted as "other" (bounded labels). */
const RESULT_NAMES = new Set(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror', 'policy']);

/** The parts of mailauth's result this plugin reads. */
export interface AuthSummary {
  spf: string;
  dkim: string;
  dmarc: string;
  arc: string;
  dmarcDomain?: string;
  dmarcPolicy?: string;
  pct?: number;
}

export function createAuthResults(random: () => number = Math.random) {
  return definePlugin({
    name: 'auth-results',
    config: configSchema,
    init({ config, global }): State {
      const r = new NodeResolver({ timeout: global.dns.timeout, tries: global.dns.tries });
      if (global.dns.servers.length) r.setServers(global.dns.servers);
      return { authservId: config.authserv_id ?? global.hostname ?? 'localhost', resolver: (name, rrtype) => r.resolve(name, rrtype), random };
    },
    hooks: {
      data: verify,
    },
  });
}

export default createAuthResults();

async function verify(ctx: Ctx): Promise<Verdict> {
  const c = ctx.config;
  if (!ctx.message || !ctx.tx) return next();
  if (!c.check_relaying && (ctx.session.relaying || ctx.session.authUser)) {
    ctx.trace?.({ verdict: 'next', detail: 'not checked: authenticated or trusted client' });
    return next();
  }
  const origin = originClient(ctx.session);
  if (origin.address === undefined) {
    ctx.trace?.({ verdict: 'next', detail: "not checked: the forwarded client's address is unknown" });
    return next();
  }
  const raw = await ctx.message.raw();
  const res = await authenticate(raw, {
    ip: origin.address,
    helo: origin.helo ?? origin.hostname ?? origin.address,
    sender: ctx.tx.mailFrom,
    mta: ctx.state.authservId,
    resolver: ctx.state.resolver as never,
    minBitLength: c.min_rsa_bits,
    disableArc: !c.arc,
    disableBimi: true,
  });

  // RFC 8601 §5: drop results that claim to be ours before adding the real ones.
  const h = ctx.message.headers;
  const ours = ctx.state.authservId.toLowerCase();
  const existing = h.get('Authentication-Results');
  for (let i = existing.length - 1; i >= 0; i--) if (authservIdOf(existing[i]!) === ours) h.remove('Authentication-Results', i);
  const produced = createMessage(Buffer.from(`${res.headers}\r\n`)).headers.list();
  const ar = produced.filter(([n]) => /^authentication-results$/i.test(n));
  const spfHeader = produced.filter(([n]) => /^received-spf$/i.test(n));
  // Added at the top: the last added ends first, so Authentication-Results goes above Received-SPF.
  if (c.received_spf) for (const [n, v] of spfHeader.reverse()) h.add(n, v);
  for (const [n, v] of ar.slice(0, 1)) h.add(n, v);

  const s = summarize(res);
  recordScan(ctx.message, { auth: { spf: s.spf, dkim: s.dkim, dmarc: s.dmarc, arc: s.arc } });
  for (const method of ['spf', 'dkim', 'dmarc', 'arc'] as const) results.inc(ctx, { method, result: RESULT_NAMES.has(s[method]) ? s[method] : 'other' });
  const detail = `spf=${s.spf} dkim=${s.dkim} dmarc=${s.dmarc}${s.dmarcPolicy ? ` (p=${s.dmarcPolicy})` : ''} arc=${s.arc}`;
  logEvent(ctx.log, 'info', 'plugin.authresults.result', { ...s, queueId: ctx.tx.id }, detail);

  if (s.dmarc === 'fail' && s.dmarcDomain && (s.dmarcPolicy === 'reject' || s.dmarcPolicy === 'quarantine')) {
    const sampled = !c.honour_pct || s.pct === undefined || s.pct >= 100 || ctx.state.random() * 100 < s.pct;
    const action = !sampled ? 'none' : s.dmarcPolicy === 'reject' ? c.dmarc_reject : c.dmarc_quarantine;
    if (action === 'reject') {
      ctx.trace?.({ verdict: 'reject', detail });
      return reject(550, '5.7.1', `Rejected by the DMARC policy of ${s.dmarcDomain}`);
    }
    if (action === 'quarantine') {
      ctx.trace?.({ verdict: 'quarantine', detail: `${detail} → ${c.quarantine_folder}` });
      return quarantine(c.quarantine_folder, `dmarc: ${s.dmarcDomain} p=${s.dmarcPolicy}`);
    }
    ctx.trace?.({ verdict: 'next', detail: `${detail}; policy not applied (${sampled ? 'configured' : 'pct sampling'})` });
    return next();
  }
  ctx.trace?.({ verdict: 'next', detail });
  return next();
}

/** The authserv-id of an Authentication-Results value (RFC 8601 §2.2: the first token, before ';'). */
export function authservIdOf(value: string): string {
  return (value.split(';')[0] ?? '').trim().split(/\s+/)[0]!.toLowerCase();
}

type Result = Awaited<ReturnType<typeof authenticate>>;

function summarize(res: Result): AuthSummary {
  const results = (res.dkim?.results ?? []) as { status?: { result?: string } }[];
  const dkim = results.length === 0 ? 'none' : results.some((r) => r.status?.result === 'pass') ? 'pass' : (results[0]?.status?.result ?? 'none');
  const spf = res.spf ? ((res.spf as { status?: { result?: string } }).status?.result ?? 'none') : 'none';
  const arc = res.arc ? ((res.arc as { status?: { result?: string } }).status?.result ?? 'none') : 'none';
  const d = res.dmarc as false | { status?: { result?: string }; domain?: string; policy?: string; pct?: number };
  return {
    spf,
    dkim,
    arc,
    dmarc: d ? (d.status?.result ?? 'none') : 'none',
    ...(d && d.domain ? { dmarcDomain: d.domain } : {}),
    ...(d && d.policy ? { dmarcPolicy: d.policy } : {}),
    ...(d && typeof d.pct === 'number' ? { pct: d.pct } : {}),
  };
}
