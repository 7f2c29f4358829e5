// Builds the inbound listeners on smtp-server, one per configured `listen.*` entry:
//
//   smtp        MX role (RFC 5321). STARTTLS (RFC 3207); AUTH offered and accepted only over TLS.
//   submission  RFC 6409: AUTH required before MAIL (530 5.7.0), AUTH only after STARTTLS
//               (538 5.7.11, RFC 4954 §6).
//   smtps       Implicit TLS submission (RFC 8314 §3.3): as submission, TLS from the first byte.
//   lmtp        RFC 2033: LHLO, one reply per recipient after DATA; no STARTTLS, no AUTH.
//
// Every listener advertises PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
// SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034; honest, see connection.ts), DSN (RFC 3461).
// The smtp listener also offers ETRN (RFC 1985, etrn.ts) to trusted clients when the daemon gives
// it the queue. Each SMTPServer has an 'error' listener: without one, a client that closes an implicit-TLS
// connection before the handshake crashes the process.
//
// Config keys: listen.{smtp,submission,smtps,lmtp}, hostname, smtp.* (max_message_size,
// max_recipients, max_line_length, idle_timeout, max_connections, max_connections_per_ip,
// max_bad_commands, bare_newline, greeting_delay), relay.networks, routes,
// listen.<name>.proxy_protocol.trusted (PROXY v1/v2 header), listen.<name>.xclient.trusted.
import type { AddressInfo } from 'node:net';
import type { SMTPServerOptions } from 'smtp-server';
import type { ListenerKind } from '../queue/envelope.js';
import { logEvent } from '../log/logger.js';
import { parseRange } from '../address/cidr.js';
import { PosternServer, type ConnectionPolicy } from './connection.js';
import { Replies } from './replies.js';
import { ConnectionCounter, SessionController, type SmtpDeps } from './session.js';
import { EtrnService, type EtrnQueue } from './etrn.js';

export type { SmtpDeps } from './session.js';

/** The session's needs, plus the queue runner ETRN uses (the smtp listener offers ETRN with it). */
export interface SmtpListenerDeps extends SmtpDeps {
  etrn?: EtrnQueue;
}

export type SmtpListenerName = Extract<ListenerKind, 'smtp' | 'submission' | 'smtps' | 'lmtp'>;

export interface SmtpListener {
  name: SmtpListenerName;
  /** Binds (port 0 allowed) and resolves with the real port. */
  listen(): Promise<{ port: number }>;
  /** Stops accepting, tells open sessions 421 4.3.2, and resolves once every socket is gone. */
  close(): Promise<void>;
}

const NAMES: SmtpListenerName[] = ['smtp', 'submission', 'smtps', 'lmtp'];

/** One listener per `listen.*` entry among smtp, submission, smtps and lmtp. */
export function createSmtpListeners(deps: SmtpListenerDeps): SmtpListener[] {
  const counter = new ConnectionCounter();
  return NAMES.filter((n) => deps.config.listen[n]).map((n) => createSmtpListener(deps, n, counter));
}

export function createSmtpListener(deps: SmtpListenerDeps, name: SmtpListenerName, counter = new ConnectionCounter()): SmtpListener {
  const { config } = deps;
  const where = config.listen[name];
  if (!where) throw new Error(`listen.${name} is not configured`);
  const smtp = config.smtp;
  const lmtp = name === 'lmtp';
  const implicitTls = name === 'smtps';
  const requireAuth = name === 'submission' || name === 'smtps';
  const policy: ConnectionPolicy = {
    lmtp,
    authOnlyOverTls: !lmtp,
    requireAuth,
    maxBadCommands: smtp.max_bad_commands,
    dsn: true,
    smtputf8: true,
  };
  const controller = new SessionController(deps, name, policy, counter);
  const log = deps.log.child({ listener: name });
  const options: SMTPServerOptions = {
    name: config.hostname,
    banner: 'Postern',
    lmtp,
    secure: implicitTls,
    key: deps.tls.key,
    cert: deps.tls.cert,
    size: smtp.max_message_size,
    maxRecipients: smtp.max_recipients,
    // Command lines (RFC 5321 §4.5.3.1.4 asks for 512 at least); longer → 421 4.5.2 and close.
    maxCommandLength: smtp.max_line_length,
    socketTimeout: smtp.idle_timeout,
    closeTimeout: 1000,
    authMethods: lmtp ? [] : ['PLAIN', 'LOGIN'],
    authOptional: !requireAuth,
    authRequiredMessage: Replies.authRequired().message,
    allowInsecureAuth: false,
    disabledCommands: lmtp ? ['AUTH', 'STARTTLS'] : implicitTls ? ['STARTTLS'] : [],
    hideSTARTTLS: lmtp || implicitTls,
    hideENHANCEDSTATUSCODES: false,
    hideSMTPUTF8: false,
    hideDSN: false,
    hideREQUIRETLS: true,
    hidePIPELINING: false,
    hide8BITMIME: false,
    // The pipeline's plugins look names up if they need them; no library DNS in the session path.
    disableReverseLookup: true,
    logger: false,
    onConnect: controller.onConnect,
    onSecure: controller.onSecure,
    onAuth: controller.onAuth,
    onMailFrom: controller.onMailFrom,
    onRcptTo: controller.onRcptTo,
    onData: controller.onData,
    onClose: controller.onClose,
  };
  const etrn = name === 'smtp' && deps.etrn ? new EtrnService({ networks: config.relay.networks, localDomains: config.domains.local }, deps.etrn) : undefined;
  const server = new PosternServer({
    ...options,
    controller,
    ...(etrn ? { etrn } : {}),
    log,
    ...(where.proxy_protocol ? { proxyTrusted: where.proxy_protocol.trusted.map(parseRange) } : {}),
    ...(where.xclient ? { xclientTrusted: where.xclient.trusted.map(parseRange) } : {}),
  });
  server.on('error', (err: Error & { code?: string; meta?: unknown }) => {
    // A TLS handshake that never happened or a reset socket is routine on the internet.
    const routine = err.code === 'SocketError' || err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'TLSError' || /TLS|SSL/i.test(err.message);
    logEvent(log, routine ? 'debug' : 'warn', 'listener.error', { err: { message: err.message, code: err.code } });
  });

  return {
    name,
    listen: () =>
      new Promise((resolve, reject) => {
        const onError = (e: Error) => reject(e);
        server.server.once('error', onError);
        server.listen(where.port, where.host, () => {
          server.server.removeListener('error', onError);
          const port = (server.server.address() as AddressInfo).port;
          logEvent(log, 'info', 'listener.start', { host: where.host, port });
          resolve({ port });
        });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.server.listening) return resolve();
        const conns = [...server.connections];
        server.close(() => resolve());
        for (const conn of conns) {
          conn.send(421, Replies.shuttingDown().message);
        }
        // Sockets whose clients do not hang up are destroyed, so close() always resolves promptly.
        const t = setTimeout(() => {
          for (const conn of conns) conn._socket.destroy();
        }, 200);
        t.unref();
      }),
  };
}
