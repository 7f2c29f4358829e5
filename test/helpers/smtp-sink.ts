// A loopback SMTP (or LMTP) sink for relay tests, on smtp-server and port 0: it records every
// transaction (envelope with its DSN parameters, and the message bytes as received after
// dot-unstuffing) and answers RCPT / DATA as the test says. `stop()` closes it; `down()` stops
// listening but keeps the port number for a later `up()` (next hop down for a while).
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';

export interface SinkMessage {
  from: string;
  to: string[];
  /** Raw MAIL/RCPT parameters as smtp-server parsed them. */
  mailArgs: Record<string, unknown>;
  rcptArgs: Record<string, unknown>[];
  data: Buffer;
  secure: boolean;
}

export interface SinkOptions {
  /** Reply for a recipient: null accepts, else an Error with responseCode. */
  rcpt?: (address: string) => { code: number; message: string } | null;
  /** Reply after DATA (SMTP) — null accepts. */
  data?: (msg: SinkMessage) => { code: number; message: string } | null;
  lmtp?: boolean;
  /** Extensions to hide, e.g. ['8BITMIME', 'DSN']. */
  hide?: string[];
  size?: number;
  auth?: { user: string; pass: string };
  /** Offer STARTTLS with this certificate. */
  tls?: { key: string; cert: string };
  /** Hold each DATA reply this long (a slow next hop, for concurrency tests). */
  dataDelayMs?: number;
}

export interface RunningSink {
  port: number;
  host: string;
  messages: SinkMessage[];
  /** Recipients seen at RCPT time (accepted or not), in order. */
  rcptSeen: string[];
  connections: number;
  /** Connections open right now, and the most that were ever open at once. */
  active: number;
  maxActive: number;
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

function err(r: { code: number; message: string }): Error {
  return Object.assign(new Error(r.message), { responseCode: r.code });
}

/** `host` lets several sinks share one port on different loopback addresses (127.0.0.2, …), as MX hosts share `outbound.mx_port`. */
export async function startSink(opts: SinkOptions = {}, port = 0, host = '127.0.0.1'): Promise<RunningSink> {
  const messages: SinkMessage[] = [];
  const rcptSeen: string[] = [];
  let connections = 0;
  let active = 0;
  let maxActive = 0;
  const make = () => {
    const o: SMTPServerOptions = {
      lmtp: !!opts.lmtp,
      secure: false,
      // down()/stop(): open sessions (a client's idle cached connection) get 421 at once.
      closeTimeout: 100,
      ...(opts.tls ? { key: opts.tls.key, cert: opts.tls.cert } : {}),
      disabledCommands: [...(opts.tls ? [] : ['STARTTLS']), ...(opts.auth ? [] : ['AUTH'])],
      authOptional: !opts.auth,
      allowInsecureAuth: true,
      hideDSN: (opts.hide ?? []).includes('DSN'),
      hide8BITMIME: (opts.hide ?? []).includes('8BITMIME'),
      hideSMTPUTF8: !(opts.hide ?? ['SMTPUTF8']).includes('SMTPUTF8') ? false : true,
      hidePIPELINING: (opts.hide ?? []).includes('PIPELINING'),
      ...(opts.size ? { size: opts.size } : {}),
      logger: false,
      onConnect(_s, cb) {
        connections++;
        active++;
        maxActive = Math.max(maxActive, active);
        cb();
      },
      onClose() {
        active--;
      },
      onAuth(auth, _s, cb) {
        if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) return cb(null, { user: auth.username });
        cb(Object.assign(new Error('Invalid credentials'), { responseCode: 535 }));
      },
      onRcptTo(addr, _s: SMTPServerSession, cb) {
        rcptSeen.push(addr.address);
        const r = opts.rcpt?.(addr.address);
        if (r) return cb(err(r));
        cb();
      },
      onData(stream, session, cb) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const msg: SinkMessage = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            mailArgs: (session.envelope.mailFrom ? session.envelope.mailFrom.args : {}) as Record<string, unknown>,
            rcptArgs: session.envelope.rcptTo.map((r) => r.args as Record<string, unknown>),
            data: Buffer.concat(chunks),
            secure: session.secure,
          };
          const answer = () => {
            const r = opts.data?.(msg);
            if (r) return cb(err(r));
            messages.push(msg);
            cb();
          };
          if (opts.dataDelayMs) setTimeout(answer, opts.dataDelayMs);
          else answer();
        });
      },
    };
    const s = new SMTPServer(o);
    s.on('error', () => undefined);
    return s;
  };
  let server = make();
  const listen = (p: number) =>
    new Promise<number>((res, rej) => {
      server.once('error', rej);
      server.listen(p, host, () => res((server.server.address() as { port: number }).port));
    });
  const actual = await listen(port);
  let isUp = true;
  return {
    port: actual,
    host,
    messages,
    rcptSeen,
    get connections() {
      return connections;
    },
    get active() {
      return active;
    },
    get maxActive() {
      return maxActive;
    },
    async down() {
      if (!isUp) return;
      isUp = false;
      await new Promise<void>((r) => server.close(() => r()));
    },
    async up() {
      if (isUp) return;
      server = make();
      await listen(actual);
      isUp = true;
    },
    async stop() {
      if (!isUp) return;
      isUp = false;
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
