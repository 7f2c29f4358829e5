// dnsbl: refuses clients listed in DNS blocklists (RFC 5782). The client address is reversed
// (IPv4: 192.0.2.99 → 99.2.0.192, §2.1; IPv6: one label per nibble, least significant first,
// §2.4) and looked up as an A record under each zone, all zones in parallel.
//
//   - An A answer counts as "listed" when it is in the zone's `answers` (addresses or ranges), or,
//     without them, anywhere in 127.0.0.0/8 except 127.0.0.1 (§5: never a listing) and
//     127.255.255.0/24 (the codes big lists use for "query refused" / "bad resolver").
//   - NXDOMAIN/NODATA: not listed. A timeout (`dns_timeout`) or DNS error of a zone is not a
//     listing either: it is logged (plugin.dnsbl.error) and not cached.
//   - Answers, listed and not listed, are cached in the store for `cache_ttl` (key
//     dnsbl:<zone>:<reversed name>; value: the A answers, comma-separated, "" for none; kept
//     whole so that a zone whose `answers` change over the API reads them anew).
//     The cache is best effort: with the store unreachable, DNS is asked every time.
//   - Clients that may relay (trusted network, authenticated) are never checked.
//   - The first listing zone in order (config, then the store's by name) decides:
//     554 5.7.1 Service unavailable; client [ip] blocked using <zone>  (reject_code/_enhanced/_text)
//   - Zones come from the config (`zones`, checked at `stage`) and from the store (`store_key`,
//     REST /v1/dnsbl/zones, src/policy/dnsbl.ts), read on every check: each store zone says
//     whether it refuses at connect, at RCPT, or adds its `score`; score zones refuse at RCPT
//     once the listing ones add up to `score_threshold` (every score zone is named in the reply).
// Checks at RCPT run at the first RCPT and their result is kept in the transaction's notes.
// The address looked up is the connection's client (session.remoteAddress), never one XFORWARD
// names: the peer that hands mail back holds the standing.
// Config keys read: zones, stage, dns_timeout, cache_ttl, reject_code, reject_enhanced,
// reject_text, store_key, score_threshold.
import ipaddr from 'ipaddr.js';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, reject, type Enhanced, type Verdict } from '../../src/pipeline/verdict.js';
import { inRanges, parseRange } from '../../src/address/cidr.js';
import { logEvent } from '../../src/log/logger.js';
import { isStoreUnavailable } from '../../src/store/errors.js';
import { answerMatcher, dnsblZones, type DnsblAction, type StoredZone } from '../../src/policy/dnsbl.js';
import type { PolicyHash } from '../../src/policy/store-hash.js';
import { configSchema, type DnsblConfig } from './config.js';

interface Zone {
  zone: string;
  /** Whether an A answer means "listed". */
  listed: (answer: string) => boolean;
  action: DnsblAction;
  /** What a listing adds, for action score. */
  score: number;
}

interface State {
  configured: Zone[];
  stored: PolicyHash<StoredZone>;
}

const DEFAULT_LISTED = [parseRange('127.0.0.0/8')];
const NEVER_LISTED = [parseRange('127.0.0.1/32'), parseRange('127.255.255.0/24')];
const defaultListed = (a: string) => inRanges(a, DEFAULT_LISTED) && !inRanges(a, NEVER_LISTED);

type Ctx = HookContext<DnsblConfig, State>;

export default definePlugin({
  name: 'dnsbl',
  config: configSchema,
  init({ config, store }): State {
    const action: DnsblAction = config.stage === 'connect' ? 'reject-connect' : 'reject-rcpt';
    const configured = config.zones.map((z): Zone => {
      const ranges = z.answers?.map(parseRange);
      return { zone: z.zone, listed: ranges ? (a) => inRanges(a, ranges) : defaultListed, action, score: 0 };
    });
    return { configured, stored: dnsblZones(store, config.store_key) };
  },
  hooks: {
    connect: (ctx) => check(ctx, 'connect'),
    rcpt: (ctx) => check(ctx, 'rcpt'),
  },
});

interface Listing {
  zone: string;
  answer: string;
}

/** The configured zones, then the store's (a store zone replaces a configured one of its name). */
async function zones(ctx: Ctx): Promise<Zone[]> {
  const stored = await ctx.state.stored.entries(ctx.log);
  if (!stored.length) return ctx.state.configured;
  const byName = new Map(ctx.state.configured.map((z) => [z.zone, z]));
  for (const s of stored.sort((a, b) => a.zone.localeCompare(b.zone))) {
    const matchers = s.answers?.map(answerMatcher);
    byName.delete(s.zone);
    byName.set(s.zone, { zone: s.zone, listed: matchers ? (a) => matchers.some((m) => m(a)) : defaultListed, action: s.action, score: s.score ?? 0 });
  }
  return [...byName.values()];
}

async function check(ctx: Ctx, stage: 'connect' | 'rcpt'): Promise<Verdict> {
  const s = ctx.session;
  if (s.relaying || s.authUser) return next();
  // At rcpt: once per transaction, not per recipient.
  let found = ctx.notes.found as { listings: (Listing & { action: DnsblAction; score: number })[] } | undefined;
  if (!found) {
    const wanted = (await zones(ctx)).filter((z) => (stage === 'connect') === (z.action === 'reject-connect'));
    if (!wanted.length) return next();
    const rev = reverseName(s.remoteAddress);
    if (!rev) return next();
    const results = await Promise.all(wanted.map(async (z) => ({ z, hit: await lookup(ctx, z, rev) })));
    found = { listings: results.flatMap(({ z, hit }) => (hit ? [{ ...hit, action: z.action, score: z.score }] : [])) };
    if (stage === 'rcpt') ctx.notes.found = found;
  }
  // The first listing zone in order decides; score zones count together.
  const deciding = found.listings.find((l) => l.action !== 'score');
  const scored = found.listings.filter((l) => l.action === 'score');
  const score = scored.reduce((n, l) => n + l.score, 0);
  let refusedBy: string | null = null;
  if (deciding) refusedBy = deciding.zone;
  else if (scored.length && score >= ctx.config.score_threshold) refusedBy = scored.map((l) => l.zone).join(', ');
  if (scored.length) ctx.trace?.({ verdict: refusedBy && !deciding ? 'reject' : 'next', detail: `dnsbl score ${score}/${ctx.config.score_threshold} (${scored.map((l) => `${l.zone}=${l.score}`).join(', ')})` });
  if (!refusedBy) return next();
  logEvent(ctx.log, 'info', 'plugin.dnsbl.listed', { zone: refusedBy, answer: (deciding ?? scored[0])!.answer, remote: s.remoteAddress, ...(deciding ? {} : { score }) }, `client listed in ${refusedBy}`);
  const text = ctx.config.reject_text.replaceAll('{ip}', s.remoteAddress).replaceAll('{zone}', refusedBy);
  return reject(ctx.config.reject_code, ctx.config.reject_enhanced as Enhanced, text);
}

/** One zone: the listing answer, or null (not listed, or the zone did not answer). */
async function lookup(ctx: Ctx, z: Zone, rev: string): Promise<Listing | null> {
  const key = `dnsbl:${z.zone}:${rev}`;
  // The cache is an optimisation: with the store unreachable, ask DNS (isStoreUnavailable).
  // It keeps every A answer, so a zone whose `answers` change reads the old answers anew.
  const cached = await ctx.store.get(key).catch(unlessStoreDown(null));
  let answers: string[];
  if (cached !== null) answers = cached ? cached.split(',') : [];
  else {
    const name = `${rev}.${z.zone}`;
    try {
      answers = await within(ctx.dns.resolve4(name), ctx.config.dns_timeout, ctx.signal);
    } catch (e) {
      if (ctx.signal.aborted) throw e;
      logEvent(ctx.log, 'warn', 'plugin.dnsbl.error', { zone: z.zone, query: name, err: e instanceof Error ? e.message : String(e) }, `${z.zone} did not answer; not counted as a listing`);
      return null;
    }
    await ctx.store.set(key, answers.join(','), { ttlMs: ctx.config.cache_ttl }).catch(unlessStoreDown(false));
  }
  const hit = answers.find((a) => z.listed(a));
  return hit ? { zone: z.zone, answer: hit } : null;
}

/** A catch handler: `fallback` when the store is unreachable, any other error thrown on. */
function unlessStoreDown<T>(fallback: T): (e: unknown) => T {
  return (e) => {
    if (isStoreUnavailable(e)) return fallback;
    throw e;
  };
}

/**
 * The DNSBL query label for an address (RFC 5782 §2.1, §2.4), or null for something that is not
 * an IP address. An IPv4-mapped IPv6 address is looked up as the IPv4 address it carries.
 */
export function reverseName(ip: string): string | null {
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.process(ip.trim());
  } catch {
    return null;
  }
  if (a.kind() === 'ipv4') return [...(a as ipaddr.IPv4).octets].reverse().join('.');
  const hex = (a as ipaddr.IPv6).parts.map((p) => p.toString(16).padStart(4, '0')).join('');
  return [...hex].reverse().join('.');
}

/** Resolves with `p`, or rejects after `ms` or when `signal` aborts, whichever comes first. */
function within<T>(p: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, rejectP) => {
    if (signal.aborted) return rejectP(signal.reason);
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      rejectP(signal.reason);
    };
    const t = setTimeout(() => {
      done();
      rejectP(new Error(`no answer within ${ms}ms`));
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e: unknown) => {
        done();
        rejectP(e);
      },
    );
  });
}
