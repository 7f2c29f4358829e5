// rate-limit: caps how many messages a client address, an authenticated user or a sender domain
// may send (counted at MAIL), and how many a recipient may receive (counted at RCPT), each per a
// sliding window, with the counters in the store so every node sharing a Redis store shares them.
//
// Sliding window counter: each window has a bucket (key …:<floor(now / window)>, incremented with
// a TTL of two windows); the count "in the last window" is the current bucket plus the previous
// one weighted by how much of it still lies inside the window. It needs only INCR/GET, so it
// works the same on both store drivers; it may overshoot by the requests racing on other nodes.
//
//   over a limit → 451 4.7.0 Rate limit exceeded (client_ip 192.0.2.1), try again later
//                  (reply 421 closes the connection too; `enhanced` and `text` are configurable)
// A refused attempt is not counted (a client that retries too fast is not punished further), and
// an attempt is counted against every limit of its stage only once all of them allow it.
// Limits without a value to count (auth_user on an anonymous session, sender_domain of the null
// sender) do not apply. exempt_clients are never limited. The trace shows each count.
// client_ip counts per client network: the address masked to ipv4_prefix (default /32, the
// address itself) or ipv6_prefix (default /64, what one IPv6 site or host is given, RFC 6177),
// so a client cannot escape its limit by moving through its own /64.
// Limits come from the config (`limits`) and from the store (`store_key`, REST
// /v1/policies/relay/rate-limits, src/policy/rate-limits.ts), read at every MAIL and RCPT, so a
// policy added on one node limits the next transaction on every node.
// Client keys and exemptions use the connection's client (session.remoteAddress), never one
// XFORWARD names: the peer that hands mail back is what is limited.
// Store keys: ratelimit:<limit index>:<key>:<value>:<bucket> (configured limits) and
// ratelimit:p<policy id>:<key>:<value>:<bucket> (store policies).
// Metrics (besides the host's per-hook ones): postern_ratelimit_hits_total{policy}, refusals by
// the limit that was over, named "<key> <max>/<window>" (e.g. "client_ip 100/1h").
// Config keys read: limits[].key/max/window/reply, exempt_clients, ipv4_prefix, ipv6_prefix,
// enhanced, text, store_key.
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, tempfail, type Enhanced, type Verdict } from '../../src/pipeline/verdict.js';
import { clientNetwork, inRanges, parseRange, type Range } from '../../src/address/cidr.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginCounter } from '../../src/pipeline/metrics.js';
import { humanWindow, rateLimitPolicies, type StoredRateLimit } from '../../src/policy/rate-limits.js';
import type { PolicyHash } from '../../src/policy/store-hash.js';
import { configSchema, type Limit, type RateLimitConfig } from './config.js';

interface State {
  exempt: Range[];
  stored: PolicyHash<StoredRateLimit>;
}

type Ctx = HookContext<RateLimitConfig, State>;

const hits = pluginCounter('postern_ratelimit_hits_total', 'Attempts refused by a rate limit, by the limit ("<key> <max>/<window>")', ['policy']);

const STAGE_OF: Record<Limit['key'], 'mail' | 'rcpt'> = { client_ip: 'mail', auth_user: 'mail', sender_domain: 'mail', recipient: 'rcpt' };

/** A rate-limit plugin reading time from `now` (tests pass a clock they move by hand). */
export function createRateLimit(now: () => number = Date.now) {
  return definePlugin({
    name: 'rate-limit',
    config: configSchema,
    init({ config, store }): State {
      return { exempt: config.exempt_clients.map(parseRange), stored: rateLimitPolicies(store, config.store_key) };
    },
    hooks: {
      mail: (ctx) => check(ctx, 'mail', now()),
      rcpt: (ctx) => check(ctx, 'rcpt', now()),
    },
  });
}

export default createRateLimit();

interface Counted {
  limit: Limit;
  label: string;
  key: string;
  count: number;
}

async function check(ctx: Ctx, stage: 'mail' | 'rcpt', t: number): Promise<Verdict> {
  const c = ctx.config;
  if (inRanges(ctx.session.remoteAddress, ctx.state.exempt)) {
    ctx.trace?.({ verdict: 'next', detail: 'exempt client' });
    return next();
  }
  const counted: Counted[] = [];
  const stored = (await ctx.state.stored.entries(ctx.log)).map((p) => ({ limit: { key: p.key, max: p.max, window: p.window_ms, reply: p.reply } as Limit, counter: `p${p.id}` }));
  for (const { limit, counter } of [...c.limits.map((limit, index) => ({ limit, counter: String(index) })), ...stored]) {
    if (STAGE_OF[limit.key] !== stage) continue;
    const value = valueOf(ctx, limit.key);
    if (value === null) continue;
    const bucket = Math.floor(t / limit.window);
    const base = `ratelimit:${counter}:${limit.key}:${value}`;
    const [cur, prev] = await Promise.all([ctx.store.get(`${base}:${bucket}`), ctx.store.get(`${base}:${bucket - 1}`)]);
    // The share of the previous bucket that still lies inside the window ending now.
    const weight = 1 - (t - bucket * limit.window) / limit.window;
    const count = Number(cur ?? 0) + Math.floor(Number(prev ?? 0) * weight);
    counted.push({ limit, label: `${limit.key} ${value}`, key: `${base}:${bucket}`, count });
  }
  if (counted.length === 0) return next();
  const over = counted.find((x) => x.count >= x.limit.max);
  if (over) {
    const window = humanWindow(over.limit.window);
    hits.inc(ctx, { policy: `${over.limit.key} ${over.limit.max}/${window}` });
    logEvent(ctx.log, 'info', 'plugin.ratelimit.exceeded', { key: over.limit.key, label: over.label, count: over.count, max: over.limit.max, window: over.limit.window }, `rate limit exceeded: ${over.label}`);
    ctx.trace?.({ verdict: 'tempfail', detail: `over the limit: ${over.label} ${over.count}/${over.limit.max} per ${window}` });
    const text = c.text.replaceAll('{key}', over.label).replaceAll('{max}', String(over.limit.max)).replaceAll('{window}', window);
    return tempfail(c.enhanced as Enhanced, text, over.limit.reply, over.limit.reply === 421 ? { disconnect: true } : {});
  }
  // A dry-run (REST POST /v1/test) is judged against the counts but spends none of the quota.
  if (!ctx.session.dryRun) await Promise.all(counted.map((x) => ctx.store.incr(x.key, { ttlMs: 2 * x.limit.window })));
  ctx.trace?.({ verdict: 'next', detail: `within limits: ${counted.map((x) => `${x.label} ${x.count + 1}/${x.limit.max} per ${humanWindow(x.limit.window)}`).join('; ')}` });
  return next();
}

function valueOf(ctx: Ctx, key: Limit['key']): string | null {
  switch (key) {
    case 'client_ip':
      return clientKey(ctx.session.remoteAddress, ctx.config.ipv4_prefix, ctx.config.ipv6_prefix);
    case 'auth_user':
      return ctx.session.authUser?.toLowerCase() ?? null;
    case 'sender_domain': {
      const from = ctx.tx?.mailFrom ?? '';
      const at = from.lastIndexOf('@');
      return at < 0 ? null : from.slice(at + 1).toLowerCase();
    }
    case 'recipient':
      return ctx.rcpt?.address.toLowerCase() ?? null;
  }
}

/**
 * What client_ip counts: the client's network at the configured prefix length, written as the
 * bare address when the prefix is the whole address ("192.0.2.1", "2001:db8::1"), else as a
 * network ("2001:db8:1:2::/64"); an IPv4-mapped IPv6 address counts as IPv4. Null: not an address.
 */
export function clientKey(ip: string, v4: number, v6: number): string | null {
  const net = clientNetwork(ip, v4, v6);
  if (!net) return null;
  const [addr, bits] = net.split('/') as [string, string];
  return Number(bits) === (addr.includes(':') ? 128 : 32) ? addr : net;
}

