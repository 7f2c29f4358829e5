// The ManageSieve listener (RFC 5804): TCP, STARTTLS (§2.2) with the daemon's certificate,
// AUTHENTICATE PLAIN against the Directory, scripts in the Store (repository.ts). One connection
// = one framer (framing.ts) + one session (session.ts); this file owns the sockets: it writes what
// the session returns, upgrades to TLS, closes idle connections and, on close(), says BYE.
//
// Config keys: listen.managesieve (host, port; 4190 is the port IANA assigned to ManageSieve), hostname (for the
// log only), sieve.limits.max_redirects (the MAXREDIRECTS capability). TLS comes from the caller
// (src/tls/certs.ts loadOrCreateTls).
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { Logger } from '../log/logger.js';
import { logEvent } from '../log/logger.js';
import { compile } from '../sieve/compile.js';
import { compileOptions, enabledCapabilities } from '../sieve/config.js';
import type { Store } from '../store/store.js';
import { CommandFramer, type Frame } from './framing.js';
import { AUTH_FAILURE_DELAY_MS, IDLE_TIMEOUT_MS, MAX_CONNECTIONS } from './limits.js';
import { Replies } from './replies.js';
import { ScriptRepository } from './repository.js';
import { ManageSieveSession, type SessionDeps } from './session.js';

export interface ManageSieveDeps {
  config: Pick<Config, 'listen' | 'sieve'>;
  log: Logger;
  directory: Pick<Directory, 'authenticate'>;
  store: Store;
  tls: { key: string; cert: string };
  /** Tests shorten these (limits.ts has the defaults). */
  authFailureDelayMs?: number;
  idleTimeoutMs?: number;
}

export interface ManageSieveListener {
  name: 'managesieve';
  /** Binds (port 0 allowed) and resolves with the real port. */
  listen(): Promise<{ port: number }>;
  /** Stops accepting, sends BYE (TRYLATER) to open sessions, and resolves once every socket is gone. */
  close(): Promise<void>;
}

/** Frames queued beyond this (a client pipelining faster than we answer) pause the socket. */
const MAX_QUEUED_FRAMES = 16;

export function createManageSieveListener(deps: ManageSieveDeps): ManageSieveListener {
  const where = deps.config.listen?.managesieve;
  if (!where) throw new Error('listen.managesieve is not configured');
  const log = deps.log.child({ listener: 'managesieve', proto: 'managesieve' });
  const secureContext = createSecureContext({ key: deps.tls.key, cert: deps.tls.cert });
  const sessionDeps: SessionDeps = {
    repo: new ScriptRepository(deps.store),
    directory: deps.directory,
    compile: (text) => compile(text, compileOptions(deps.config.sieve)),
    implementation: 'Postern',
    sieveExtensions: enabledCapabilities(deps.config.sieve),
    maxRedirects: deps.config.sieve.limits.max_redirects,
    authFailureDelayMs: deps.authFailureDelayMs ?? AUTH_FAILURE_DELAY_MS,
  };
  const open = new Set<Connection>();
  const server: Server = createServer((socket) => {
    const conn = new Connection(socket, sessionDeps, secureContext, log, deps.idleTimeoutMs ?? IDLE_TIMEOUT_MS);
    open.add(conn);
    conn.closed.then(() => open.delete(conn));
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on('error', (err) => logEvent(log, 'error', 'listener.error', { err }));

  return {
    name: 'managesieve',
    listen() {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(where.port, where.host, () => {
          server.off('error', reject);
          const port = (server.address() as AddressInfo).port;
          logEvent(log, 'info', 'listener.start', { host: where.host, port });
          resolve({ port });
        });
      });
    },
    async close() {
      const stopped = new Promise<void>((r) => server.close(() => r()));
      await Promise.all([...open].map((c) => c.shutdown()));
      await stopped;
    },
  };
}

/** One client connection: the socket (plain, then TLS after STARTTLS), its framer and session. */
class Connection {
  private socket: Socket;
  private readonly session: ManageSieveSession;
  private readonly framer = new CommandFramer();
  private readonly queue: Frame[] = [];
  private busy = false;
  private ending = false;
  private isGone = false;
  private idle: NodeJS.Timeout | undefined;
  private resolveClosed!: () => void;
  readonly closed = new Promise<void>((r) => (this.resolveClosed = r));
  private readonly log: Logger;
  private readonly onData = (chunk: Buffer) => this.received(chunk);

  constructor(
    private readonly raw: Socket,
    deps: SessionDeps,
    private readonly secureContext: SecureContext,
    parentLog: Logger,
    private readonly idleMs: number,
  ) {
    this.socket = raw;
    this.log = parentLog.child({ cid: randomBytes(5).toString('hex'), remote: raw.remoteAddress });
    this.session = new ManageSieveSession(deps, false, this.log);
    logEvent(this.log, 'info', 'managesieve.connect', {});
    raw.on('data', this.onData);
    raw.on('error', (err) => this.log.debug({ err }, 'socket error'));
    raw.on('close', () => this.gone());
    this.touch();
    this.write(this.session.greeting());
  }

  /** BYE (TRYLATER) and close; resolves when the socket is gone (forced after one second). */
  async shutdown(): Promise<void> {
    if (!this.ending) {
      this.write(Replies.shutdown().toWire());
      this.end();
    }
    const force = setTimeout(() => this.socket.destroy(), 1000);
    await this.closed;
    clearTimeout(force);
  }

  private received(chunk: Buffer): void {
    if (this.ending) return;
    this.touch();
    for (const f of this.framer.push(chunk)) this.queue.push(f);
    if (this.queue.length > MAX_QUEUED_FRAMES) this.socket.pause();
    void this.drain();
  }

  /** Runs queued commands one at a time, in order (RFC 5804 §1.2: responses follow commands). */
  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.ending) {
        const out = await this.session.handle(this.queue.shift()!);
        this.write(out.wire);
        if (out.after === 'close') this.end();
        else if (out.after === 'starttls') this.startTls();
      }
    } catch (err) {
      // session.handle turns every error into a reply; this is a bug, so log and hang up.
      logEvent(this.log, 'error', 'managesieve.error', { err }, 'session failed');
      this.socket.destroy();
    } finally {
      this.busy = false;
      if (!this.ending && this.socket.isPaused()) this.socket.resume();
    }
  }

  /**
   * RFC 5804 §2.2: the OK is written in clear, then the handshake starts. Anything the client sent
   * after STARTTLS in clear (queued commands, buffered bytes) is thrown away, so nothing injected
   * before the handshake runs inside the TLS session. After the handshake the server speaks first.
   */
  private startTls(): void {
    this.queue.length = 0;
    this.framer.reset();
    this.raw.off('data', this.onData);
    const secure = new TLSSocket(this.raw, { isServer: true, secureContext: this.secureContext });
    this.socket = secure;
    secure.on('data', this.onData);
    secure.on('error', (err) => {
      this.log.info({ err: err.message }, 'TLS handshake failed');
      secure.destroy();
    });
    secure.on('close', () => this.gone());
    secure.once('secure', () => this.write(this.session.startedTls()));
  }

  private write(s: string): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(s);
  }

  private end(): void {
    this.ending = true;
    clearTimeout(this.idle);
    this.socket.end();
  }

  private touch(): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.write(Replies.idle().toWire());
      this.end();
    }, this.idleMs);
    this.idle.unref();
  }

  private gone(): void {
    if (this.isGone) return;
    this.isGone = true;
    clearTimeout(this.idle);
    this.ending = true;
    logEvent(this.log, 'info', 'managesieve.disconnect', {});
    this.resolveClosed();
  }
}
