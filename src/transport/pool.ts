// Connection reuse for outbound SMTP/LMTP: after a transaction the session is kept open for the
// next message to the same host, as Postfix's connection cache does (RFC 5321 §3.3 lets one
// session carry several transactions).
//   - A session is keyed by what it was opened with: protocol, address, port (or unix socket),
//     implicit TLS, TLS policy, AUTH credentials. Only a session whose transaction ended cleanly goes
//     back to the pool; any error closes it.
//   - A reused session gets RSET first (RFC 5321 §4.1.1.5; with PIPELINING it heads the
//     envelope group, smtp-client.ts); if that fails (the server timed out and left) it is
//     dropped and a fresh one opened, which is not a delivery failure.
//   - `outbound.reuse.max_messages` transactions per connection, then QUIT; an idle session is
//     closed after `outbound.reuse.idle_timeout`; at most `idleLimit` idle sessions per key.
//   - Idle sockets do not keep the process alive; `close()` QUITs every idle session.
//   - A session that spoke for another client (XCLIENT) is reused only if the server still takes
//     XCLIENT (smtp-client.ts `canCarry`); sessions are keyed by destination too, so one opened
//     for a route that forwards its clients never carries other mail.
//   - Open connections, idle ones included, are bounded by `outbound.concurrency.total` and, per
//     destination, by `outbound.concurrency.per_domain`: opening one more at a limit first closes
//     the longest-idle session that counts toward that limit, or waits for a session to end. A
//     session finishing while someone waits for room is closed rather than kept.
//
// Config keys: `outbound.reuse.max_messages`, `outbound.reuse.idle_timeout`,
// `outbound.concurrency.total`, `outbound.concurrency.per_domain`.
import { createHash } from 'node:crypto';
import { failedSession, openSession, type ClientOptions, type ClientSession, type Destination, type OutMessage, type SessionResult } from './smtp-client.js';

export interface PoolOptions {
  maxMessages: number;
  idleTimeoutMs: number;
  /** Idle sessions kept per key (the per-destination concurrency limit fits). */
  idleLimit: number;
  /** Open connections at most (in use and idle); absent: no limit. */
  total?: number;
  /** Open connections at most per destination (`Destination.destination`); absent: no limit. */
  perDestination?: number;
}

interface Idle {
  session: ClientSession;
  timer: NodeJS.Timeout;
  /** When it went idle (the longest-idle session is closed first to make room). */
  since: number;
}

export function poolKey(dest: Destination): string {
  const where = dest.socketPath ? `unix:${dest.socketPath}` : `${dest.host}|${dest.port}`;
  // Credentials are part of the identity: a session logged in with other ones is not ours.
  const auth = dest.auth ? createHash('sha256').update(`${dest.auth.user}\0${dest.auth.pass}`).digest('base64') : '';
  return [dest.protocol, where, dest.secure ? 'tls' : 'plain', dest.tls, auth, dest.name, dest.forwardClient ?? 'none', dest.destination ?? ''].join('|');
}

/** The budget a connection counts toward. */
function budgetOf(dest: Destination): string {
  return dest.destination ?? poolKey(dest);
}

export class ConnectionPool {
  private readonly idle = new Map<string, Idle[]>();
  /** Open sessions (in use or idle) and the budget each counts toward. */
  private readonly counted = new Map<ClientSession, string>();
  private readonly perBudget = new Map<string, number>();
  private waiters: (() => void)[] = [];
  private closed = false;
  /** Sessions opened so far (logs and tests). */
  opened = 0;

  constructor(private readonly opts: PoolOptions) {}

  private get reuse(): boolean {
    return this.opts.maxMessages > 1 && this.opts.idleTimeoutMs > 0 && !this.closed;
  }

  /** Sends one message over a pooled session or a new one. Never throws. */
  async send(dest: Destination, msg: OutMessage, clientOpts: ClientOptions): Promise<SessionResult> {
    const key = poolKey(dest);
    // Only a session that may carry this message is taken (one speaking for another client
    // stays idle for that client's next message); one whose RSET fails is closed.
    const fits = (s: ClientSession) => s.canCarry(msg);
    for (let s = this.take(key, fits); s; s = this.take(key, fits)) {
      s.setRef(true);
      const result = s.canCarry(msg) ? await s.transactReused(msg) : null;
      if (result) return this.finish(key, s, result);
      void this.closeSession(s);
    }
    const budget = budgetOf(dest);
    await this.room(budget);
    const opened = await openSession(dest, clientOpts);
    if (!opened.ok) {
      this.uncount(budget);
      return failedSession(dest, msg, opened.failure);
    }
    this.opened++;
    this.counted.set(opened.session, budget);
    return this.finish(key, opened.session, await opened.session.transact(msg));
  }

  /** Closes every idle session; later sessions are closed after their transaction. */
  close(): void {
    this.closed = true;
    // Off the lists first: closing a session can fire its onClosed at once, and `drop` would
    // splice the list being walked, skipping the next session (left open, never QUIT).
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    for (const i of all) {
      clearTimeout(i.timer);
      void this.closeSession(i.session);
    }
  }

  /** Idle sessions right now (tests, logs). */
  get idleCount(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  /** Open sessions right now, in use and idle (tests, logs). */
  get openCount(): number {
    let n = 0;
    for (const v of this.perBudget.values()) n += v;
    return n;
  }

  /** Waits until one more connection for `budget` fits the limits, and counts it. */
  private async room(budget: string): Promise<void> {
    for (;;) {
      const perFull = this.opts.perDestination !== undefined && (this.perBudget.get(budget) ?? 0) >= this.opts.perDestination;
      const totalFull = this.opts.total !== undefined && this.openCount >= this.opts.total;
      if (!perFull && !totalFull) {
        this.perBudget.set(budget, (this.perBudget.get(budget) ?? 0) + 1);
        return;
      }
      // An idle session is the cheapest thing to give up: the longest-idle one that counts
      // toward the limit reached (this destination's when its own limit is, else any).
      const victim = this.longestIdle(perFull ? budget : undefined);
      if (victim) {
        this.unlist(victim.key, victim.entry);
        await this.closeSession(victim.entry.session);
        continue;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private uncount(budget: string): void {
    const n = (this.perBudget.get(budget) ?? 0) - 1;
    if (n > 0) this.perBudget.set(budget, n);
    else this.perBudget.delete(budget);
    // Everyone waiting looks again; those that still do not fit wait on.
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Closes a session; its connection counts toward the limits until the socket is gone on both
   * sides (then the next hop sees it closed too). Resolves then.
   */
  private async closeSession(s: ClientSession): Promise<void> {
    const gone = s.socketGone();
    s.close();
    const budget = this.counted.get(s);
    if (budget === undefined) return;
    this.counted.delete(s);
    await gone;
    this.uncount(budget);
  }

  private longestIdle(budget: string | undefined): { key: string; entry: Idle } | undefined {
    let best: { key: string; entry: Idle } | undefined;
    for (const [key, list] of this.idle) {
      for (const entry of list) {
        if (budget !== undefined && this.counted.get(entry.session) !== budget) continue;
        if (!best || entry.since < best.entry.since) best = { key, entry };
      }
    }
    return best;
  }

  /** The most recently idle session of `key` that `fits`, out of the idle list. */
  private take(key: string, fits: (s: ClientSession) => boolean): ClientSession | undefined {
    const list = this.idle.get(key);
    if (!list) return undefined;
    let at = -1;
    for (let j = list.length - 1; j >= 0; j--) {
      if (fits(list[j]!.session)) {
        at = j;
        break;
      }
    }
    const i = at >= 0 ? list.splice(at, 1)[0] : undefined;
    if (list.length === 0) this.idle.delete(key);
    if (!i) return undefined;
    clearTimeout(i.timer);
    return i.session;
  }

  private finish(key: string, s: ClientSession, result: SessionResult): SessionResult {
    const list = this.idle.get(key) ?? [];
    // Someone waiting for room gets this connection's place rather than it idling.
    if (!this.reuse || !s.reusable || s.messages >= this.opts.maxMessages || list.length >= this.opts.idleLimit || this.waiters.length > 0) {
      void this.closeSession(s);
      return result;
    }
    const entry: Idle = {
      session: s,
      timer: setTimeout(() => this.drop(key, entry, true), this.opts.idleTimeoutMs),
      since: Date.now(),
    };
    entry.timer.unref();
    s.setRef(false);
    // The server may hang up on an idle session (its own timeout): forget it at once.
    s.onClosed(() => this.drop(key, entry, false));
    list.push(entry);
    this.idle.set(key, list);
    return result;
  }

  /** Takes an entry off the idle list; false when it was no longer there. */
  private unlist(key: string, entry: Idle): boolean {
    const list = this.idle.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return false;
    list!.splice(i, 1);
    if (list!.length === 0) this.idle.delete(key);
    clearTimeout(entry.timer);
    return true;
  }

  /** An idle session leaves the pool: closed by us (`quit`, idle timeout), or by the server. */
  private drop(key: string, entry: Idle, quit: boolean): void {
    if (!this.unlist(key, entry)) return;
    if (quit) {
      void this.closeSession(entry.session);
      return;
    }
    // Closed by the server: only the accounting is left.
    const budget = this.counted.get(entry.session);
    if (budget !== undefined) {
      this.counted.delete(entry.session);
      this.uncount(budget);
    }
  }
}
