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
// Addresses given as IPv4-mapped IPv6 (::ffff:127.0.0.1) match IPv4 networks.
// The client is the connection's (session.remoteAddress): a client a content filter names with
// XFORWARD (session.forwarded) describes the message and never decides relaying or access.
// Config keys read: relay.networks, routes (global); networks, store_key (own, see config.ts).
import { definePlugin } from '../../src/pipeline/plugin.js';
import { accept, next, reject } from '../../src/pipeline/verdict.js';
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

export default definePlugin({
  name: 'relay-acl',
  config: configSchema,
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
      if (inRanges(ctx.session.remoteAddress, ctx.state.ranges) || inRanges(ctx.session.remoteAddress, await storeRanges(ctx))) {
        ctx.session.relaying = true;
      }
      return next();
    },

    async mail(ctx) {
      if (!ctx.tx) return next();
      const entries = await storeEntries(ctx, ctx.config.sender_access_key);
      if (entries.length && decide(entries, ctx.tx.mailFrom, ctx.session.remoteAddress) === 'deny') {
        logEvent(ctx.log, 'info', 'plugin.relay.denied', { from: ctx.tx.mailFrom, remote: ctx.session.remoteAddress }, 'sender access list: deny');
        return reject(550, '5.7.1', 'Sender address rejected: access denied');
      }
      return next();
    },

    async rcpt(ctx) {
      if (!ctx.rcpt) return next();
      const mayRelay = ctx.session.relaying || Boolean(ctx.session.authUser);
      let addr;
      try {
        addr = parseAddress(ctx.rcpt.address);
      } catch {
        // RFC 3463 5.1.3: bad destination mailbox address syntax.
        return reject(553, '5.1.3', 'Bad recipient address syntax');
      }
      const tricks = addr.tricks.filter((t) => SUSPECT.has(t));
      if (tricks.length && !mayRelay) {
        logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, tricks, remote: ctx.session.remoteAddress }, 'routing trick from a client that may not relay');
        return relayDenied();
      }
      const access = await storeEntries(ctx, ctx.config.recipient_access_key);
      const verdict = access.length ? decide(access, addr.address, ctx.session.remoteAddress) : null;
      if (verdict === 'deny') {
        logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, remote: ctx.session.remoteAddress }, 'recipient access list: deny');
        return reject(550, '5.7.1', 'Recipient address rejected: access denied');
      }
      if (verdict === 'allow' && !tricks.length) return accept();
      if (!addr.domain.startsWith('[') && (ctx.directory.isLocalDomain(addr.domain) || ctx.directory.isLocalDomain(addr.domainAscii))) return next();
      if (!tricks.length && ctx.config.relay_domains_key && (await storeHas(ctx, ctx.config.relay_domains_key, addr.domainAscii.toLowerCase()))) return accept();
      const routes = await ctx.state.routes.table(ctx.log);
      if (routes.has(addr.domain) || routes.has(addr.domainAscii)) return accept();
      if (mayRelay) return accept();
      logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, domain: addr.domain, remote: ctx.session.remoteAddress }, 'foreign recipient from a client that may not relay');
      return relayDenied();
    },
  },
});

async function storeRanges(ctx: { config: { store_key: string }; store: { hgetall(k: string): Promise<Record<string, string>> }; log: import('pino').Logger }): Promise<Range[]> {
  if (!ctx.config.store_key) return [];
  let stored: Record<string, string>;
  try {
    stored = await ctx.store.hgetall(ctx.config.store_key);
  } catch (e) {
    // Failing closed is safe here: without the run-time list the client simply may not relay.
    ctx.log.warn({ evt: 'store.error', err: e }, 'cannot read run-time relay networks; using the configured ones');
    return [];
  }
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

type StoreCtx = { store: { hgetall(k: string): Promise<Record<string, string>>; hget(k: string, f: string): Promise<string | null> }; log: import('pino').Logger };

/** An access list from the store; on a store failure, none (the static policy still applies). */
async function storeEntries(ctx: StoreCtx, key: string): Promise<AccessEntry[]> {
  if (!key) return [];
  try {
    return parseEntries(await ctx.store.hgetall(key));
  } catch (e) {
    ctx.log.warn({ evt: 'store.error', err: e, key }, 'cannot read a run-time access list; ignoring it');
    return [];
  }
}

async function storeHas(ctx: StoreCtx, key: string, field: string): Promise<boolean> {
  try {
    return (await ctx.store.hget(key, field)) !== null;
  } catch (e) {
    // Failing closed: without the list the domain is simply not relayed for.
    ctx.log.warn({ evt: 'store.error', err: e, key }, 'cannot read the run-time relay domains');
    return false;
  }
}
