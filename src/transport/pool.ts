// Connection reuse for outbound SMTP/LMTP: after a transaction the session is kept open for the
// next message to the same host, as Postfix's connection cache does (RFC 5321 §3.3 lets one
// session carry several transactions).
//   - A session is keyed by what it was opened with: protocol, address, port (or unix socket),
//     implicit TLS, TLS policy, AUTH credentials. Only a session whose transaction ended cleanly goes
//     back to the pool; any error closes it.
//   - A reused session gets RSET first (RFC 5321 §4.1.1.5); if that fails (the server timed
//     out and left) it is dropped and a fresh one opened, which is not a delivery failure.
//   - `outbound.reuse.max_messages` transactions per connection, then QUIT; an idle session is
//     closed after `outbound.reuse.idle_timeout`; at most `idleLimit` idle sessions per key.
//   - Idle sockets do not keep the process alive; `close()` QUITs every idle session.
// Concurrency limits (outbound.ts) count sessions in use, not idle ones.
//
// Config keys: `outbound.reuse.max_messages`, `outbound.reuse.idle_timeout`.
import { createHash } from 'node:crypto';
import { failedSession, openSession, type ClientOptions, type ClientSession, type Destination, type OutMessage, type SessionResult } from './smtp-client.js';

export interface PoolOptions {
  maxMessages: number;
  idleTimeoutMs: number;
  /** Idle sessions kept per key (the per-destination concurrency limit fits). */
  idleLimit: number;
}

interface Idle {
  session: ClientSession;
  timer: NodeJS.Timeout;
}

export function poolKey(dest: Destination): string {
  const where = dest.socketPath ? `unix:${dest.socketPath}` : `${dest.host}|${dest.port}`;
  // Credentials are part of the identity: a session logged in with other ones is not ours.
  const auth = dest.auth ? createHash('sha256').update(`${dest.auth.user}\0${dest.auth.pass}`).digest('base64') : '';
  return [dest.protocol, where, dest.secure ? 'tls' : 'plain', dest.tls, auth, dest.name].join('|');
}

export class ConnectionPool {
  private readonly idle = new Map<string, Idle[]>();
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
    for (let s = this.take(key); s; s = this.take(key)) {
      s.setRef(true);
      if (await s.reset()) return this.finish(key, s, await s.transact(msg));
      s.close();
    }
    const opened = await openSession(dest, clientOpts);
    if (!opened.ok) return failedSession(dest, msg, opened.failure);
    this.opened++;
    return this.finish(key, opened.session, await opened.session.transact(msg));
  }

  /** Closes every idle session; later sessions are closed after their transaction. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) {
      for (const i of list) {
        clearTimeout(i.timer);
        i.session.close();
      }
    }
    this.idle.clear();
  }

  /** Idle sessions right now (tests, logs). */
  get idleCount(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  private take(key: string): ClientSession | undefined {
    const list = this.idle.get(key);
    const i = list?.pop();
    if (list && list.length === 0) this.idle.delete(key);
    if (!i) return undefined;
    clearTimeout(i.timer);
    return i.session;
  }

  private finish(key: string, s: ClientSession, result: SessionResult): SessionResult {
    const list = this.idle.get(key) ?? [];
    if (!this.reuse || !s.reusable || s.messages >= this.opts.maxMessages || list.length >= this.opts.idleLimit) {
      s.close();
      return result;
    }
    const entry: Idle = {
      session: s,
      timer: setTimeout(() => this.drop(key, entry, true), this.opts.idleTimeoutMs),
    };
    entry.timer.unref();
    s.setRef(false);
    // The server may hang up on an idle session (its own timeout): forget it at once.
    s.onClosed(() => this.drop(key, entry, false));
    list.push(entry);
    this.idle.set(key, list);
    return result;
  }

  private drop(key: string, entry: Idle, quit: boolean): void {
    const list = this.idle.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.idle.delete(key);
    clearTimeout(entry.timer);
    if (quit) entry.session.close();
  }
}
