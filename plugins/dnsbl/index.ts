// dnsbl: refuses clients listed in DNS blocklists (RFC 5782). The client address is reversed
// (IPv4: 192.0.2.99 → 99.2.0.192, §2.1; IPv6: one label per nibble, least significant first,
// §2.4) and looked up as an A record under each zone, all zones in parallel.
//
//   - An A answer counts as "listed" when it is in the zone's `answers` (addresses or ranges), or,
//     without them, anywhere in 127.0.0.0/8 except 127.0.0.1 (§5: never a listing) and
//     127.255.255.0/24 (the codes big lists use for "query refused" / "bad resolver").
//   - NXDOMAIN/NODATA: not listed. A timeout (`dns_timeout`) or DNS error of a zone is not a
//     listing either: it is logged (plugin.dnsbl.error) and not cached.
//   - Answers, listed and not listed, are cached in the store for `cache_ttl`
//     (key dnsbl:<zone>:<reversed name>; value: the listing answer, or "" when not listed).
//     The cache is best effort: with the store unreachable, DNS is asked every time.
//   - Clients that may relay (trusted network, authenticated) are never checked.
//   - The first listing zone in config order decides:
//     554 5.7.1 Service unavailable; client [ip] blocked using <zone>  (reject_code/_enhanced/_text)
// With `stage: rcpt` the check runs at the first RCPT and its result is kept in the notes.
// Config keys read: zones, stage, dns_timeout, cache_ttl, reject_code, reject_enhanced, reject_text.
import ipaddr from 'ipaddr.js';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, reject, type Enhanced, type Verdict } from '../../src/pipeline/verdict.js';
import { inRanges, parseRange, type Range } from '../../src/address/cidr.js';
import { logEvent } from '../../src/log/logger.js';
import { isStoreUnavailable } from '../../src/store/errors.js';
import { configSchema, type DnsblConfig } from './config.js';

interface Zone {
  zone: string;
  /** null: the default rule. */
  answers: Range[] | null;
}

interface State {
  zones: Zone[];
}

const DEFAULT_LISTED = [parseRange('127.0.0.0/8')];
const NEVER_LISTED = [parseRange('127.0.0.1/32'), parseRange('127.255.255.0/24')];

type Ctx = HookContext<DnsblConfig, State>;

export default definePlugin({
  name: 'dnsbl',
  config: configSchema,
  init({ config }): State {
    return { zones: config.zones.map((z) => ({ zone: z.zone, answers: z.answers ? z.answers.map(parseRange) : null })) };
  },
  hooks: {
    connect: (ctx) => (ctx.config.stage === 'connect' ? check(ctx) : Promise.resolve(next())),
    rcpt: (ctx) => (ctx.config.stage === 'rcpt' ? check(ctx) : Promise.resolve(next())),
  },
});

interface Listing {
  zone: string;
  answer: string;
}

async function check(ctx: Ctx): Promise<Verdict> {
  const s = ctx.session;
  if (s.relaying || s.authUser) return next();
  // At rcpt: once per transaction, not per recipient.
  let listing = ctx.notes.listing as Listing | null | undefined;
  if (listing === undefined) {
    const rev = reverseName(s.remoteAddress);
    if (!rev) return next();
    const results = await Promise.all(ctx.state.zones.map((z) => lookup(ctx, z, rev)));
    listing = results.find((r): r is Listing => r !== null) ?? null;
    ctx.notes.listing = listing;
  }
  if (!listing) return next();
  logEvent(ctx.log, 'info', 'plugin.dnsbl.listed', { zone: listing.zone, answer: listing.answer, remote: s.remoteAddress }, `client listed in ${listing.zone}`);
  const text = ctx.config.reject_text.replaceAll('{ip}', s.remoteAddress).replaceAll('{zone}', listing.zone);
  return reject(ctx.config.reject_code, ctx.config.reject_enhanced as Enhanced, text);
}

/** One zone: the listing answer, or null (not listed, or the zone did not answer). */
async function lookup(ctx: Ctx, z: Zone, rev: string): Promise<Listing | null> {
  const key = `dnsbl:${z.zone}:${rev}`;
  // The cache is an optimisation: with the store unreachable, ask DNS (isStoreUnavailable).
  const cached = await ctx.store.get(key).catch(unlessStoreDown(null));
  if (cached !== null) return cached ? { zone: z.zone, answer: cached } : null;
  const name = `${rev}.${z.zone}`;
  let answers: string[];
  try {
    answers = await within(ctx.dns.resolve4(name), ctx.config.dns_timeout, ctx.signal);
  } catch (e) {
    if (ctx.signal.aborted) throw e;
    logEvent(ctx.log, 'warn', 'plugin.dnsbl.error', { zone: z.zone, query: name, err: e instanceof Error ? e.message : String(e) }, `${z.zone} did not answer; not counted as a listing`);
    return null;
  }
  const hit = answers.find((a) => listed(a, z)) ?? '';
  await ctx.store.set(key, hit, { ttlMs: ctx.config.cache_ttl }).catch(unlessStoreDown(false));
  return hit ? { zone: z.zone, answer: hit } : null;
}

/** A catch handler: `fallback` when the store is unreachable, any other error thrown on. */
function unlessStoreDown<T>(fallback: T): (e: unknown) => T {
  return (e) => {
    if (isStoreUnavailable(e)) return fallback;
    throw e;
  };
}

function listed(answer: string, z: Zone): boolean {
  if (z.answers) return inRanges(answer, z.answers);
  return inRanges(answer, DEFAULT_LISTED) && !inRanges(answer, NEVER_LISTED);
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
