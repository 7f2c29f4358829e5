// Backend connections for the in-line proxy (`routes.<d>.mode: proxy`), kept between
// transactions as the queue's pool (src/transport/pool.ts) keeps its own:
//   - keyed by next hop URL, TLS policy and forward_client mode;
//   - a session goes back after its transaction (DATA answered, or the client gave up before
//     DATA); the next transaction gets it after RSET (RFC 5321 §4.1.1.5). A session the backend
//     dropped meanwhile, or whose RSET fails, is closed and the next one tried, then a new one
//     opened: never a failure for the client;
//   - a session speaking for another client through XCLIENT is not reused for this one unless
//     the backend takes XCLIENT again (backend-client.ts `canCarry`);
//   - `outbound.reuse.max_messages` transactions per connection, then QUIT;
//     `outbound.reuse.idle_timeout` unused, then QUIT; at most `outbound.concurrency.per_domain`
//     idle sessions per key. `max_messages: 1` turns reuse off.
//
// Config keys read: outbound.reuse.max_messages, outbound.reuse.idle_timeout,
// outbound.concurrency.per_domain (the daemon passes them).
import type { ForwardClientMode, ForwardedClient } from '../transport/forward-client.js';
import type { ParsedNexthop } from '../transport/outbound.js';
import { BackendError, BackendSession, type BackendOptions } from './backend-client.js';

export interface BackendPoolOptions {
  maxMessages: number;
  idleTimeoutMs: number;
  /** Idle sessions kept per key. */
  idleLimit: number;
}

interface Idle {
  s: BackendSession;
  timer: NodeJS.Timeout;
}

/**
 * A session ready for MAIL, with the TLS policy met: `establish`, and when an opportunistic
 * handshake fails, once more in clear on a new connection (RFC 7435 §3, as the queue does).
 */
export async function connectBackend(hop: ParsedNexthop, opts: BackendOptions): Promise<BackendSession> {
  try {
    return await BackendSession.establish(hop, opts);
  } catch (e) {
    const policy = hop.tls ?? opts.tls ?? 'none';
    if (!(e instanceof BackendError) || e.kind !== 'tls' || policy !== 'opportunistic') throw e;
    return BackendSession.establish({ ...hop, tls: 'none' }, opts);
  }
}

export class BackendPool {
  private readonly idle = new Map<string, Idle[]>();
  private closed = false;
  /** Backend connections opened so far (tests and logs). */
  opened = 0;

  constructor(private readonly opts: BackendPoolOptions) {}

  static key(nexthop: string, tls: string, mode: ForwardClientMode): string {
    return `${nexthop}|${tls}|${mode}`;
  }

  private get reuse(): boolean {
    return this.opts.maxMessages > 1 && this.opts.idleTimeoutMs > 0 && !this.closed;
  }

  /**
   * A session for a transaction of `client`: a kept one (after RSET) or a new one. Throws what
   * `connectBackend` throws. `reused` tells which.
   */
  async acquire(key: string, hop: ParsedNexthop, opts: BackendOptions, mode: ForwardClientMode, client: ForwardedClient): Promise<{ s: BackendSession; reused: boolean }> {
    // A session speaking for another client stays idle for that client; a closed one is
    // taken out and dropped.
    const fits = (e: BackendSession) => e.closed || e.canCarry(mode, client);
    for (let e = this.take(key, fits); e; e = this.take(key, fits)) {
      e.setRef(true);
      if (!e.closed && e.canCarry(mode, client)) {
        const r = await e.command('RSET').catch(() => null);
        if (r?.code === 250) {
          e.messages++;
          return { s: e, reused: true };
        }
      }
      void e.quit();
    }
    const s = await connectBackend(hop, opts);
    this.opened++;
    s.messages++;
    return { s, reused: false };
  }

  /** Takes a session back after its transaction; it is kept or closed. */
  release(key: string, s: BackendSession): void {
    const list = this.idle.get(key) ?? [];
    // A reply still on its way would be taken for the next command's: such a session is closed.
    if (!this.reuse || !s.quiet || s.messages >= this.opts.maxMessages || list.length >= this.opts.idleLimit) {
      void s.quit();
      return;
    }
    const entry: Idle = {
      s,
      timer: setTimeout(() => {
        const i = list.indexOf(entry);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0 && this.idle.get(key) === list) this.idle.delete(key);
        void s.quit();
      }, this.opts.idleTimeoutMs),
    };
    entry.timer.unref();
    s.setRef(false);
    list.push(entry);
    this.idle.set(key, list);
  }

  /** Idle sessions right now (tests). */
  get idleCount(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  /** QUITs every idle session; sessions in use are closed when released. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) {
      for (const e of list.splice(0)) {
        clearTimeout(e.timer);
        void e.s.quit();
      }
    }
    this.idle.clear();
  }

  /** The most recently idle session of `key` that `fits`, out of the idle list. */
  private take(key: string, fits: (s: BackendSession) => boolean): BackendSession | undefined {
    const list = this.idle.get(key);
    if (!list) return undefined;
    let at = -1;
    for (let j = list.length - 1; j >= 0; j--) {
      if (fits(list[j]!.s)) {
        at = j;
        break;
      }
    }
    const e = at >= 0 ? list.splice(at, 1)[0] : undefined;
    if (list.length === 0) this.idle.delete(key);
    if (!e) return undefined;
    clearTimeout(e.timer);
    return e.s;
  }
}
