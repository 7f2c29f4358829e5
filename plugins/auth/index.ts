// auth: checks SMTP AUTH credentials (RFC 4954) against the user directory, with a tarpit and a
// lockout against password guessing.
//
//   auth  locked username or client        → 454 4.7.0 Temporary authentication failure
//                                             (RFC 4954 §6: temporary; the password is not even checked)
//         directory.authenticate() succeeds → accept; session.authUser = the canonical address,
//                                             session.relaying = true; the username's counter resets
//         it fails                          → count the failure (per username and per client), wait
//                                             delay × failures (≤ max_delay, abortable), then
//                                             535 5.7.8 Authentication credentials invalid (RFC 4954 §6)
// No username enumeration: an unknown user and a wrong password get the same reply after the same
// delay (the directory does constant work on failure), and locks apply to any username tried,
// existing or not, keyed case-insensitively so "Alice" and "alice" share one counter.
// A success does not reset the client's counter, or one valid account would let a client keep
// guessing others. IPv6 clients are counted per /64 (one host usually owns a whole /64).
// The client is the connection's (session.remoteAddress), never one XFORWARD names.
//
// Store keys: auth:fail:user:<name>, auth:fail:ip:<client> (counters, TTL `window`),
//             auth:lock:user:<name>, auth:lock:ip:<client> (TTL `lockout`; delete one to unlock).
// Config keys read: max_failures, max_failures_per_ip, window, lockout, delay, max_delay.
import ipaddr from 'ipaddr.js';
import { definePlugin } from '../../src/pipeline/plugin.js';
import { accept, next, reject, tempfail } from '../../src/pipeline/verdict.js';
import { logEvent } from '../../src/log/logger.js';
import { configSchema } from './config.js';

export const invalidCredentials = () => reject(535, '5.7.8', 'Authentication credentials invalid');
export const temporarilyLocked = () => tempfail('4.7.0', 'Temporary authentication failure', 454);

export default definePlugin({
  name: 'auth',
  config: configSchema,
  hooks: {
    async auth(ctx) {
      const attempt = ctx.auth;
      if (!attempt) return next();
      const cfg = ctx.config;
      const user = userKey(attempt.username);
      const client = clientKey(ctx.session.remoteAddress);
      const [userLock, ipLock] = await Promise.all([ctx.store.get(`auth:lock:user:${user}`), ctx.store.get(`auth:lock:ip:${client}`)]);
      if (userLock !== null || ipLock !== null) {
        logEvent(ctx.log, 'info', 'plugin.auth.locked', { user, client, by: userLock !== null ? 'user' : 'ip' }, 'authentication refused: locked');
        return temporarilyLocked();
      }

      const canonical = await ctx.directory.authenticate(attempt.username, attempt.password);
      if (canonical) {
        await ctx.store.del(`auth:fail:user:${user}`);
        ctx.session.authUser = canonical;
        ctx.session.relaying = true;
        return accept();
      }

      const [userFails, ipFails] = await Promise.all([
        ctx.store.incr(`auth:fail:user:${user}`, { ttlMs: cfg.window }),
        ctx.store.incr(`auth:fail:ip:${client}`, { ttlMs: cfg.window }),
      ]);
      if (userFails >= cfg.max_failures) await lock(ctx, `auth:lock:user:${user}`, { user, failures: userFails });
      if (ipFails >= cfg.max_failures_per_ip) await lock(ctx, `auth:lock:ip:${client}`, { client, failures: ipFails });
      // Tarpit: each failure so far adds `delay`, so guessing gets slower, up to the cap.
      const wait = Math.min(cfg.delay * Math.max(userFails, ipFails), cfg.max_delay);
      await sleep(wait, ctx.signal);
      return invalidCredentials();
    },
  },
});

async function lock(ctx: { store: import('../../src/store/store.js').Store; config: { lockout: number }; log: import('pino').Logger }, key: string, fields: Record<string, unknown>): Promise<void> {
  // ifAbsent: a lock already in place keeps its original expiry.
  if (await ctx.store.set(key, String(Date.now()), { ttlMs: ctx.config.lockout, ifAbsent: true })) {
    logEvent(ctx.log, 'warn', 'plugin.auth.locked', { ...fields, lockoutMs: ctx.config.lockout }, 'too many authentication failures: locked');
  }
}

/** Case-insensitive, bounded: the key space an attacker controls stays small. */
export function userKey(username: string): string {
  return username.trim().toLowerCase().slice(0, 320);
}

/** IPv4 (also when IPv4-mapped) as is; IPv6 by its /64. */
export function clientKey(ip: string): string {
  try {
    const a = ipaddr.process(ip);
    if (a.kind() === 'ipv4') return a.toString();
    const parts = (a as ipaddr.IPv6).parts.slice(0, 4);
    return `${parts.map((p) => p.toString(16)).join(':')}::/64`;
  } catch {
    return ip;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, rejectP) => {
    if (signal.aborted) return rejectP(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      rejectP(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
