// One request/response exchange with a content scanner (clamd, spamd) over TCP or a unix socket,
// for the scanner plugins. The caller writes its request through `send` (backpressure is
// honoured: a write that fills the socket buffer waits for 'drain'); the reply is every byte the
// scanner sends until it closes the connection or `complete(reply)` says the reply is whole.
//
// Failure contract: anything short of a whole reply (refused, connect timeout, reset, the hook's
// AbortSignal firing) rejects with ScannerUnavailable, which the plugins let through so the
// runner applies the entry's failure policy (451 4.3.0, or fail-open). A scanner that answers
// and closes while the request is still being written (clamd past its StreamMaxLength) is not a
// failure: its reply is returned.
//
// Config keys: the endpoint fields below, shared by every scanner plugin's schema.
import { connect, type Socket } from 'node:net';
import { z } from 'zod';
import { duration } from '../../config/units.js';

/** Endpoint options: `socket` (a unix socket path) or `host` + `port`. */
export const endpointFields = {
  host: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  socket: z.string().min(1).optional(),
  /** Time allowed to connect; the scan itself is bounded by the hook's `timeout`. */
  connect_timeout: duration().prefault('2s'),
};

export type Endpoint = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** Refinement for a schema holding endpointFields: not both a socket and a host. */
export function endpointProblem(c: { host?: string; socket?: string }): string | null {
  return c.socket && c.host ? 'give either socket (a unix socket path) or host/port, not both' : null;
}

export function endpointOf(c: { host?: string; port?: number; socket?: string }, defaultPort: number): Endpoint {
  if (c.socket) return { kind: 'unix', path: c.socket };
  return { kind: 'tcp', host: c.host ?? '127.0.0.1', port: c.port ?? defaultPort };
}

export function describeEndpoint(e: Endpoint): string {
  return e.kind === 'unix' ? `unix:${e.path}` : `${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/** The scanner could not be asked or did not answer in full. */
export class ScannerUnavailable extends Error {
  constructor(
    readonly scanner: string,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(`${scanner}: ${message}`, opts);
    this.name = 'ScannerUnavailable';
  }
}

export interface ExchangeOptions {
  scanner: string;
  connectTimeoutMs: number;
  signal: AbortSignal;
  /** Writes the request; resolve when all of it is written. */
  send: (write: (chunk: Buffer | string) => Promise<void>, end: () => void) => Promise<void>;
  /** Added to the error when the scanner hangs up while the request is being written (why it may). */
  hangupHint?: string;
  /** True once the bytes so far are a whole reply (default: only the scanner's close ends it). */
  complete?: (reply: Buffer) => boolean;
}

export function exchange(endpoint: Endpoint, opts: ExchangeOptions): Promise<Buffer> {
  const where = describeEndpoint(endpoint);
  return new Promise<Buffer>((resolve, reject) => {
    if (opts.signal.aborted) return reject(new ScannerUnavailable(opts.scanner, `aborted before connecting to ${where}`, { cause: opts.signal.reason }));
    const sock: Socket = endpoint.kind === 'unix' ? connect({ path: endpoint.path }) : connect({ host: endpoint.host, port: endpoint.port });
    const chunks: Buffer[] = [];
    let settled = false;
    let connected = false;
    let writing = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      opts.signal.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const onAbort = () => finish(new ScannerUnavailable(opts.scanner, `no reply from ${where} before the deadline`, { cause: opts.signal.reason }));
    opts.signal.addEventListener('abort', onAbort, { once: true });
    const connectTimer = setTimeout(() => finish(new ScannerUnavailable(opts.scanner, `connect to ${where} timed out after ${opts.connectTimeoutMs}ms`)), opts.connectTimeoutMs);

    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      if (opts.complete?.(Buffer.concat(chunks))) finish(null);
    });
    sock.on('end', () => finish(chunks.length ? null : new ScannerUnavailable(opts.scanner, `${where} closed the connection without a reply`)));
    sock.on('close', () => finish(chunks.length ? null : new ScannerUnavailable(opts.scanner, `${where} closed the connection without a reply`)));
    sock.on('error', (e) => {
      // A reply already received wins over the reset that follows it.
      if (chunks.length) return finish(null);
      const code = (e as NodeJS.ErrnoException).code;
      const hangup = connected && writing && (code === 'EPIPE' || code === 'ECONNRESET');
      const text = !connected
        ? `cannot connect to ${where}: ${e.message}`
        : hangup
          ? `${where} closed the connection while the request was being written (${code})${opts.hangupHint ? `; ${opts.hangupHint}` : ''}`
          : `${where}: ${e.message}`;
      finish(new ScannerUnavailable(opts.scanner, text, { cause: e }));
    });
    sock.on('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      const write = (chunk: Buffer | string) =>
        new Promise<void>((res) => {
          if (settled || sock.destroyed) return res();
          if (sock.write(chunk)) res();
          else {
            const go = () => {
              sock.off('drain', go);
              sock.off('close', go);
              res();
            };
            sock.on('drain', go);
            sock.on('close', go);
          }
        });
      writing = true;
      opts
        .send(write, () => sock.end())
        .then(() => (writing = false))
        .catch((e: unknown) => finish(new ScannerUnavailable(opts.scanner, `writing to ${where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e })));
    });
  });
}
