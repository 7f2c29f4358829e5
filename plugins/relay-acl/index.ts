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
// mail would bounce over a passing outage): an access list that cannot be read makes the hook
// throw, and so does a refusal that an unread list (the trusted networks, read again at that
// point, the relay domains, routes never read yet) might have turned into an accept. The plugin
// runner answers 451 4.3.0, or with `on_error: fail-open` goes on without this plugin (the SMTP
// core still refuses foreign recipients). A Redis store answers these keys from their last known
// values during an outage (`store.last_known`), so this is mostly a cold start in an outage.
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
      // An unreadable run-time list trusts nobody more here; RCPT reads it again before refusing.
      if (inRanges(ctx.session.remoteAddress, ctx.state.ranges) || inRanges(ctx.session.remoteAddress, (await storeRanges(ctx)) ?? [])) {
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
      // The first store failure on the way to a refusal (see the header).
      let unread: unknown = undefined;
      if (!tricks.length && ctx.config.relay_domains_key) {
        const has = await storeHas(ctx, ctx.config.relay_domains_key, addr.domainAscii.toLowerCase());
        if (has === true) return accept();
        if (has !== false) unread = has.error;
      }
      const routes = await ctx.state.routes.table(ctx.log);
      if (routes.has(addr.domain) || routes.has(addr.domainAscii)) return accept();
      if (mayRelay) return accept();
      unread ??= ctx.state.routes.unread;
      const networks = await storeRanges(ctx);
      if (networks === null) {
        unread ??= new Error(`cannot read ${ctx.config.store_key}`);
      } else if (inRanges(ctx.session.remoteAddress, networks)) {
        ctx.session.relaying = true; // added since the connect, or unreadable then
        return accept();
      }
      if (unread !== undefined) throw unread;
      logEvent(ctx.log, 'info', 'plugin.relay.denied', { rcpt: ctx.rcpt.address, domain: addr.domain, remote: ctx.session.remoteAddress }, 'foreign recipient from a client that may not relay');
      return relayDenied();
    },
  },
});

/** The run-time trusted networks; null when the store cannot be read (logged). */
async function storeRanges(ctx: { config: { store_key: string }; store: { hgetall(k: string): Promise<Record<string, string>> }; log: import('pino').Logger }): Promise<Range[] | null> {
  if (!ctx.config.store_key) return [];
  let stored: Record<string, string>;
  try {
    stored = await ctx.store.hgetall(ctx.config.store_key);
  } catch (e) {
    ctx.log.warn({ evt: 'store.error', err: e }, 'cannot read run-time relay networks; using the configured ones');
    return null;
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

/**
 * An access list from the store. A store failure is thrown: a deny entry it holds must not be
 * skipped (the runner answers 451 4.3.0, or goes on with `on_error: fail-open`).
 */
async function storeEntries(ctx: StoreCtx, key: string): Promise<AccessEntry[]> {
  if (!key) return [];
  return parseEntries(await ctx.store.hgetall(key));
}

/** Whether `field` is in the hash; the error when the store cannot be read (logged). */
async function storeHas(ctx: StoreCtx, key: string, field: string): Promise<boolean | { error: unknown }> {
  try {
    return (await ctx.store.hget(key, field)) !== null;
  } catch (error) {
    ctx.log.warn({ evt: 'store.error', err: error, key }, 'cannot read the run-time relay domains');
    return { error };
  }
}
