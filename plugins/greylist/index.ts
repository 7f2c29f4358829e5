// greylist: defers the first delivery attempt of an unknown (client network, envelope sender,
// recipient) triplet at RCPT, as postgrey and the original greylisting paper do; a real MTA
// retries, most spam engines do not.
//
//   unknown triplet               → 451 4.7.1 Greylisted, please try again later (recorded)
//   retry before `delay`          → 451 4.7.1 again (the first-seen time stays)
//   retry after `delay`, within `retry_window` of the first attempt → accepted (`next`), and the
//                                   triplet passes for `expiry` after it was last seen
//   retry after `retry_window`    → treated as new
//   `auto_allow_after` accepted deliveries from one client network → that network skips
//                                   greylisting for `expiry`
// The client network is the address masked to ipv4_prefix (/24) or ipv6_prefix (/64); the sender
// is lower-cased ("" for the null sender <>); the recipient lower-cased.
// Never greylisted: trusted networks and authenticated users (session.relaying / authUser),
// allow_clients, allow_senders, allow_recipients. Every decision is a trace entry.
//
// Store keys (values JSON, TTLs only collect garbage; times are checked against the stored ones):
//   greylist:t:<sha256(net, sender, rcpt)>  { first, passed? }   TTL retry_window, then expiry
//   greylist:n:<net>                        accepted deliveries   TTL expiry (incr)
//   greylist:a:<net>                        "1" = auto-allowed    TTL expiry
// With the Redis store these are shared by every node.
// The client is the connection's (session.remoteAddress), never one XFORWARD names.
// Metrics (besides the host's per-hook ones): postern_greylist_outcomes_total{outcome}, one per
// checked recipient: new (first attempt, or its window was over: deferred), too-early (deferred
// again), passed (retried in time, or a known triplet), auto-allowed (its network skips the check).
// Recipients not checked at all (trusted, allow-listed) are not counted here.
// Config keys read: delay, retry_window, expiry, auto_allow_after, ipv4_prefix, ipv6_prefix,
// allow_clients, allow_senders, allow_recipients, text.
import { createHash } from 'node:crypto';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, tempfail, type Verdict } from '../../src/pipeline/verdict.js';
import { clientNetwork, inRanges, parseRange, type Range } from '../../src/address/cidr.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginCounter, type Metered } from '../../src/pipeline/metrics.js';
import { configSchema, type GreylistConfig } from './config.js';

interface State {
  allowClients: Range[];
}

interface Entry {
  /** When the triplet was first seen (ms). */
  first: number;
  /** When it last passed (ms); absent while it waits for its retry. */
  passed?: number;
}

type Ctx = HookContext<GreylistConfig, State>;

type Outcome = 'new' | 'too-early' | 'passed' | 'auto-allowed';
const outcomes = pluginCounter<'outcome'>('postern_greylist_outcomes_total', 'Greylist checks, by outcome (new, too-early, passed, auto-allowed)', ['outcome']);
const counted = (on: Metered, outcome: Outcome) => outcomes.inc(on, { outcome });

/** A greylist plugin reading time from `now` (tests pass a clock they move by hand). */
export function createGreylist(now: () => number = Date.now) {
  return definePlugin({
    name: 'greylist',
    config: configSchema,
    init({ config }): State {
      return { allowClients: config.allow_clients.map(parseRange) };
    },
    hooks: {
      rcpt: (ctx) => check(ctx, now()),
    },
  });
}

export default createGreylist();

export { clientNetwork };

async function check(ctx: Ctx, t: number): Promise<Verdict> {
  const c = ctx.config;
  const s = ctx.session;
  const rcpt = (ctx.rcpt?.address ?? '').toLowerCase();
  const sender = (ctx.tx?.mailFrom ?? '').toLowerCase();
  const skip = (why: string) => {
    ctx.trace?.({ verdict: 'next', detail: `not greylisted: ${why}` });
    return next();
  };
  if (s.relaying || s.authUser) return skip('trusted or authenticated client');
  if (inRanges(s.remoteAddress, ctx.state.allowClients)) return skip('allow_clients');
  if (matches(sender, c.allow_senders)) return skip('allow_senders');
  if (matches(rcpt, c.allow_recipients)) return skip('allow_recipients');
  const net = clientNetwork(s.remoteAddress, c.ipv4_prefix, c.ipv6_prefix);
  if (!net) return skip('client address unknown');
  if ((await ctx.store.get(`greylist:a:${net}`)) !== null) {
    counted(ctx, 'auto-allowed');
    return skip(`client network ${net} auto-allowed`);
  }

  const key = `greylist:t:${createHash('sha256').update(`${net}\0${sender}\0${rcpt}`).digest('hex').slice(0, 40)}`;
  const entry = parse(await ctx.store.get(key));
  const triplet = `${net}, <${sender}>, <${rcpt}>`;

  if (entry?.passed !== undefined && t - entry.passed <= c.expiry) return pass(ctx, key, entry, t, net, `known triplet ${triplet}`);
  if (entry && entry.passed === undefined && t - entry.first <= c.retry_window) {
    if (t - entry.first >= c.delay) return pass(ctx, key, entry, t, net, `retried after ${Math.round((t - entry.first) / 1000)}s: ${triplet}`);
    counted(ctx, 'too-early');
    return defer(ctx, triplet, `retried too early (${Math.round((t - entry.first) / 1000)}s of ${Math.round(c.delay / 1000)}s)`);
  }
  // New, or its window (retry or expiry) is over: start over. ifAbsent keeps the earliest
  // first-seen time when two nodes see the same new triplet at once.
  // A dry-run (REST POST /v1/test) says what would happen and records no triplet.
  const fresh: Entry = { first: t };
  if (ctx.session.dryRun) {
    /* nothing stored */
  } else if (entry) await ctx.store.set(key, JSON.stringify(fresh), { ttlMs: c.retry_window });
  else await ctx.store.set(key, JSON.stringify(fresh), { ttlMs: c.retry_window, ifAbsent: true });
  counted(ctx, 'new');
  return defer(ctx, triplet, entry ? 'window over, new first attempt' : 'new triplet');
}

async function pass(ctx: Ctx, key: string, entry: Entry, t: number, net: string, why: string): Promise<Verdict> {
  const c = ctx.config;
  if (ctx.session.dryRun) {
    ctx.trace?.({ verdict: 'next', detail: `passed: ${why}` });
    return next();
  }
  await ctx.store.set(key, JSON.stringify({ first: entry.first, passed: t }), { ttlMs: c.expiry });
  if (c.auto_allow_after > 0) {
    const n = await ctx.store.incr(`greylist:n:${net}`, { ttlMs: c.expiry });
    if (n >= c.auto_allow_after) await ctx.store.set(`greylist:a:${net}`, '1', { ttlMs: c.expiry });
  }
  counted(ctx, 'passed');
  ctx.trace?.({ verdict: 'next', detail: `passed: ${why}` });
  return next();
}

function defer(ctx: Ctx, triplet: string, why: string): Verdict {
  logEvent(ctx.log, 'info', 'plugin.greylist.deferred', { triplet, reason: why }, `greylisted: ${why}`);
  ctx.trace?.({ verdict: 'tempfail', detail: `greylisted (${why}): ${triplet}` });
  return tempfail('4.7.1', ctx.config.text);
}

function parse(v: string | null): Entry | null {
  if (v === null) return null;
  try {
    const e = JSON.parse(v) as Entry;
    return typeof e.first === 'number' ? e : null;
  } catch {
    return null;
  }
}

/** "a@example.org" matches the address; "example.org" / "@example.org" the whole domain. */
function matches(address: string, patterns: readonly string[]): boolean {
  if (!address) return false;
  const domain = address.slice(address.lastIndexOf('@') + 1);
  return patterns.some((p) => (p.includes('@') && !p.startsWith('@') ? p === address : p.replace(/^@/, '') === domain));
}
