// A raw SMTP next hop on loopback whose replies a test scripts, for what smtp-server will not do
// (odd or non-conforming answers) and to see how the client's commands reach the wire.
//
// Per connection it records every command line, the lines that arrived in each read (`batches`),
// each message body, and whether the client closed while in DATA. With `holdUntilData`, replies
// to the commands before DATA are held until the DATA line arrives (RFC 2920 §3.1 group), so a
// client that waits for each reply stalls: after `holdMs` the held replies go out anyway and the
// connection's `stalls` count says so.
import { createServer, type Socket } from 'node:net';

export interface HopConnection {
  commands: string[];
  batches: string[][];
  bodies: string[];
  stalls: number;
  /** The client closed the connection in the middle of a message's DATA. */
  closedInData: boolean;
  closed: boolean;
}

export interface ScriptedHop {
  port: number;
  connections: HopConnection[];
  stop(): Promise<void>;
}

export interface ScriptedHopOptions {
  /** EHLO keywords after the greeting line, e.g. ['PIPELINING', 'SIZE 1000000', 'DSN']. */
  ehlo: string[];
  /**
   * The reply to a command (without CRLF); undefined: the default (250 for most, 354 for DATA,
   * 221 and close for QUIT). `conn` is the connection's index, `line` the command as sent.
   * Return `{ reply, close: true }` to close the connection after the reply.
   */
  answer?: (line: string, conn: number, c: HopConnection) => string | { reply: string; close: true } | undefined;
  /** Reply after the final dot; default 250. */
  afterData?: (body: string, conn: number) => string;
  holdUntilData?: boolean;
  holdMs?: number;
}

export async function startScriptedHop(opts: ScriptedHopOptions): Promise<ScriptedHop> {
  const connections: HopConnection[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    const index = connections.length;
    const c: HopConnection = { commands: [], batches: [], bodies: [], stalls: 0, closedInData: false, closed: false };
    connections.push(c);
    sockets.add(sock);
    let buf = '';
    let body: string[] | null = null;
    let held: string[] = [];
    let holdTimer: NodeJS.Timeout | undefined;
    const flush = () => {
      clearTimeout(holdTimer);
      holdTimer = undefined;
      if (held.length) sock.write(held.join(''));
      held = [];
    };
    const send = (reply: string, hold: boolean) => {
      if (!hold) {
        flush();
        sock.write(`${reply}\r\n`);
        return;
      }
      held.push(`${reply}\r\n`);
      holdTimer ??= setTimeout(() => {
        c.stalls++;
        flush();
      }, opts.holdMs ?? 500);
    };
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(holdTimer);
      sockets.delete(sock);
      c.closed = true;
      if (body) c.closedInData = true;
    });
    sock.write('220 hop.test ESMTP\r\n');
    sock.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      const batch: string[] = [];
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (body) {
          if (line !== '.') {
            body.push(line.startsWith('.') ? line.slice(1) : line);
            continue;
          }
          const text = body.join('\r\n');
          body = null;
          c.bodies.push(text);
          send(opts.afterData?.(text, index) ?? '250 2.0.0 queued', false);
          continue;
        }
        batch.push(line);
        c.commands.push(line);
        const verb = line.split(' ')[0]!.toUpperCase();
        const scripted = opts.answer?.(line, index, c);
        const reply = typeof scripted === 'object' ? scripted.reply : scripted;
        if (verb === 'EHLO' || verb === 'LHLO') {
          const lines = ['hop.test', ...opts.ehlo];
          send(reply ?? lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'), false);
        } else if (verb === 'QUIT') {
          flush();
          sock.end(`${reply ?? '221 2.0.0 bye'}\r\n`);
        } else if (verb === 'DATA') {
          const r = reply ?? '354 go ahead';
          send(r, false);
          if (/^[23]/.test(r)) body = [];
        } else {
          send(reply ?? '250 2.0.0 ok', !!opts.holdUntilData);
        }
        if (typeof scripted === 'object' && scripted.close) {
          flush();
          sock.end();
        }
      }
      if (batch.length) c.batches.push(batch);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    connections,
    stop: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
