// relay-acl: never an open relay (RFC 5321 §3.6.2, RFC 2505 §2). Decides who may relay and
// refuses the address tricks open-relay probes use. The SMTP core also denies foreign recipients
// by default; this is defense in depth and the place where relay policy is stated.
//
//   connect  client in relay.networks (+ `networks`, + the store's run-time list) → the session
//            may relay (session.relaying = true); then next().
//   mail     the sender access list (store, src/policy/access.ts): deny → 550 5.7.1.
//   rcpt     the address is parsed by address/address.ts (never split here), then:
//              malformed                                          → 553 5.1.3
//              a routing trick (percent-hack, bang-path, quoted-at,
//                source-route, ip-literal) and the client may not relay → 554 5.7.1
//              the recipient access list says deny                → 550 5.7.1
//              … says allow                                       → accept
//              a domain of the store's relay domains              → accept
//              a local domain                                     → next (the core checks the mailbox)
//              a `routes` domain (we are its MX / front end; the
//                config's and the store's, src/policy/routes.ts)  → accept
//              foreign, and the client is trusted or authenticated → accept
//              foreign otherwise                                  → 554 5.7.1 Relay access denied
// Run-time lists the store cannot answer never turn into a permanent refusal (a trusted client's
// mail would bounce over a passing outage), nor let a deny entry be skipped: an access list that
// cannot be read, and a refusal that an unread list (the trusted networks, read again before any
// refusal, the relay domains, routes never read yet) might have turned into an accept, are
// answered 451 4.3.0 by this plugin itself, and `on_error: fail-open` is refused
// (failOpenRefused): a chain that went on without relay-acl would relay on a later plugin's
// accept at RCPT (the core takes any accept there as leave to relay). A Redis store answers these
// keys from their last known values during an outage (`store.last_known`), so this is mostly a
// node started in an outage.
// Addresses given as IPv4-mapped IPv6 (::ffff:127.0.0.1) match IPv4 networks.
// The client is the connection's (session.remoteAddress): a client a content filter names with
// XFORWARD (session.forwarded) describes the message and never decides relaying or access.
// Config keys read: relay.networks, routes (global); networks, store_key (own, see config.ts).
import { definePlugin } from '../../src/pipeline/plugin.js';
import { accept, next, reject, tempfail } from '../../src/pipeline/verdict.js';
import { parseAddress } from '../../src/address/address.js';
import { logEvent } from '../../src/log/logger.js';
import { configSchema } from './config.js';
import { inRanges, parseRange, type Range } from '../../src/address/cidr.js';
import { LiveRoutes } from '../../src/policy/routes.js';
import { decide, parseEntries, type AccessEntry } from '../../src/policy/access.js';

interface State {
  ranges: Range[];
  /** The `routes` domains (config and store): mail for them is accepted from anyone (we are their MX). */
  routes: LiveRoutes;
}

/** The tricks that make an address suspect; a trailing dot alone is harmless (normalised away). */
const SUSPECT = new Set(['percent-hack', 'bang-path', 'quoted-at', 'source-route', 'ip-literal']);

export const relayDenied = () => reject(554, '5.7.1', 'Relay access denied');
/** A run-time list this decision needs cannot be read (logged where the read failed). */
const policyUnavailable = () => tempfail('4.3.0', 'Relay policy unavailable, try again later');

export default definePlugin({
  name: 'relay-acl',
  config: configSchema,
  failOpenRefused: "while it fails, a later plugin's accept at RCPT would relay for anyone",
  init({ config, global, store }): State {
    const ranges: Range[] = [];
    for (const n of [...global.relay.networks, ...config.networks]) {
      try {
        ranges.push(parseRange(n));
      } catch {
        throw new Error(`relay network "${n}" is not an IP address or CIDR range`);
      }
    }
    return { ranges, routes: new LiveRoutes(global.routes ?? {}, store) };
  },
  hooks: {
    async connect(ctx) {
      // An unreadable run-time list trusts nobody more here; RCPT reads it again before refusing.
      if (inRanges(ctx.session.remoteAddress, ctx.state.ranges) || inRanges(ctx.session.remoteAddress, (await storeRanges(ctx)) ?? [])) {
        ctx.session.relaying = true;
      }
      return next();
    },

    async mail(ctx) {
      if (!ctx.tx) return next();
      const entries = await storeEntries(ctx, ctx.config.sender_access_key);
      if (entries === null) return policyUnavailable();
      if (entries.length && decide(entries, ctx.tx.mailFrom, ctx.session.remoteAddress) === 'deny') {
        logEvent(ctx.log, 'info', 'plugin.relay.denied', { from: ctx.tx.mailFrom, remote: ctx.session.remoteAddress }, 'sender access list: deny');
        return reject(550, '5.7.1', 'Sender address rejected: access denied');
      }
      return next();
    },

    async rcpt(ctx) {
      if (!ctx.rcpt) return next();
      let mayRelay = ctx.session.relaying || Boolean(ctx.session.authUser);
      let addr;
      try {
        addr = parseAddress(ctx.rcpt.address);
      } catch {
        // RFC 3463 5.1.3: bad destination mailbox address syntax.
        return reject(553, '5.1.3', 'Bad recipient address syntax');
      }
      const tricks = addr.tricks.filter((t) => SUSPECT.has(t));
      if (tricks.length && !mayRelay) {
        const trusted = await runtimeTrusted(ctx);
        if (trusted === null) return policyUnavailable();
        if (!trusted) {
          logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, tricks, remote: ctx.session.remoteAddress }, 'routing trick from a client that may not relay');
          return relayDenied();
        }
        mayRelay = true;
      }
      const access = await storeEntries(ctx, ctx.config.recipient_access_key);
      if (access === null) return policyUnavailable();
      const verdict = access.length ? decide(access, addr.address, ctx.session.remoteAddress) : null;
      if (verdict === 'deny') {
        logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, remote: ctx.session.remoteAddress }, 'recipient access list: deny');
        return reject(550, '5.7.1', 'Recipient address rejected: access denied');
      }
      if (verdict === 'allow' && !tricks.length) return accept();
      if (!addr.domain.startsWith('[') && (ctx.directory.isLocalDomain(addr.domain) || ctx.directory.isLocalDomain(addr.domainAscii))) return next();
      // A list that could not be read on the way to a refusal (see the header).
      let unknown = false;
      if (!tricks.length && ctx.config.relay_domains_key) {
        const has = await storeHas(ctx, ctx.config.relay_domains_key, addr.domainAscii.toLowerCase());
        if (has) return accept();
        unknown = has === null;
      }
      const routes = await ctx.state.routes.table(ctx.log);
      if (routes.has(addr.domain) || routes.has(addr.domainAscii)) return accept();
      if (mayRelay) return accept();
      const trusted = await runtimeTrusted(ctx);
      if (trusted) return accept();
      if (unknown || trusted === null || ctx.state.routes.unknown) return policyUnavailable();
      logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, domain: addr.domain, remote: ctx.session.remoteAddress }, 'foreign recipient from a client that may not relay');
      return relayDenied();
    },
  },
});

/**
 * Before a refusal: whether the client is in the run-time trusted networks, read again (connect's
 * read may have failed, or the list changed since); null when they cannot be read. A client in
 * them may relay from now on, as if the connect had found it.
 */
async function runtimeTrusted(ctx: Parameters<typeof storeRanges>[0] & { session: { remoteAddress: string; relaying: boolean } }): Promise<boolean | null> {
  const networks = await storeRanges(ctx);
  if (networks === null) return null;
  if (!inRanges(ctx.session.remoteAddress, networks)) return false;
  ctx.session.relaying = true;
  return true;
}

type StoreCtx = { store: { hgetall(k: string): Promise<Record<string, string>>; hget(k: string, f: string): Promise<string | null> }; log: import('pino').Logger };

/** One store read; null when the store cannot answer, logged with what the read was for. */
async function readOrNull<T>(ctx: StoreCtx, key: string, what: string, read: () => Promise<T>): Promise<T | null> {
  try {
    return await read();
  } catch (e) {
    ctx.log.warn({ evt: 'store.error', err: e, key }, `cannot read ${what}`);
    return null;
  }
}

/** The run-time trusted networks; null when the store cannot be read (logged). */
async function storeRanges(ctx: StoreCtx & { config: { store_key: string } }): Promise<Range[] | null> {
  const key = ctx.config.store_key;
  if (!key) return [];
  const stored = await readOrNull(ctx, key, 'run-time relay networks; using the configured ones', () => ctx.store.hgetall(key));
  if (stored === null) return null;
  const out: Range[] = [];
  for (const [id, cidr] of Object.entries(stored)) {
    try {
      out.push(parseRange(cidr));
    } catch {
      ctx.log.warn({ evt: 'plugin.error', id, cidr }, 'ignoring an invalid relay network in the store');
    }
  }
  return out;
}

/** An access list from the store; null when it cannot be read (logged): its deny entries are unknown. */
async function storeEntries(ctx: StoreCtx, key: string): Promise<AccessEntry[] | null> {
  if (!key) return [];
  const stored = await readOrNull(ctx, key, 'a run-time access list; 451 until it can be read', () => ctx.store.hgetall(key));
  return stored && parseEntries(stored);
}

/** Whether `field` is in the hash; null when the store cannot be read (logged). */
function storeHas(ctx: StoreCtx, key: string, field: string): Promise<boolean | null> {
  return readOrNull(ctx, key, 'the run-time relay domains', async () => (await ctx.store.hget(key, field)) !== null);
}
