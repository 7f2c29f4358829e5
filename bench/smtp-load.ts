// A small SMTP load generator: N concurrent connections, each sending messages back to back
// (MAIL, RCPT, DATA on one connection, RSET-free since each transaction ends with the dot).
// Latency is measured from the final "<CRLF>.<CRLF>" to the 250 reply: the accept latency a
// client sees, which includes the spool fsync.
import { connect, type Socket } from 'node:net';

export interface LoadOptions {
  host: string;
  port: number;
  connections: number;
  /** Total messages across all connections. */
  messages: number;
  from: string;
  to: (i: number) => string;
  body: Buffer;
  /**
   * RFC 2920: send MAIL, RCPT and DATA in one write and read the three replies after, as MTA
   * clients such as Postfix's smtp do; otherwise each command waits for its reply (as
   * smtp-source and nodemailer do).
   */
  pipelining?: boolean;
}

export interface LoadResult {
  sent: number;
  failed: number;
  wallMs: number;
  latenciesMs: number[];
  errors: string[];
}

class LineClient {
  private buf = '';
  private waiters: ((line: string) => void)[] = [];
  private lines: string[] = [];
  constructor(readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        // Multi-line replies: only the last line ("250 ...") completes a reply.
        if (/^\d{3}-/.test(line)) continue;
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }
  reply(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((r) => this.waiters.push(r));
  }
  async cmd(line: string, expect: string): Promise<void> {
    this.sock.write(line + '\r\n');
    const r = await this.reply();
    if (!r.startsWith(expect)) throw new Error(`${line.split(' ')[0]} → ${r}`);
  }
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  let next = 0;
  const latencies: number[] = [];
  const errors: string[] = [];
  let failed = 0;
  const data = Buffer.concat([o.body, Buffer.from('\r\n.\r\n')]);
  const t0 = performance.now();
  async function worker(): Promise<void> {
    const sock = connect(o.port, o.host);
    await new Promise<void>((res, rej) => sock.once('connect', res).once('error', rej));
    const c = new LineClient(sock);
    const greet = await c.reply();
    if (!greet.startsWith('220')) throw new Error(`greeting ${greet}`);
    await c.cmd('EHLO bench.example', '250');
    while (next < o.messages) {
      const i = next++;
      try {
        if (o.pipelining) {
          sock.write(`MAIL FROM:<${o.from}>\r\nRCPT TO:<${o.to(i)}>\r\nDATA\r\n`);
          // All three replies are read before judging any, so a refusal leaves no reply unread.
          const replies = [await c.reply(), await c.reply(), await c.reply()];
          const expected = [['MAIL', '250'], ['RCPT', '250'], ['DATA', '354']] as const;
          const bad = expected.findIndex(([, code], k) => !replies[k]!.startsWith(code));
          if (bad >= 0) {
            // A 354 despite a refusal (never expected) is closed with an empty message.
            if (replies[2]!.startsWith('354')) {
              sock.write('.\r\n');
              await c.reply();
            }
            throw new Error(`${expected[bad]![0]} → ${replies[bad]}`);
          }
        } else {
          await c.cmd(`MAIL FROM:<${o.from}>`, '250');
          await c.cmd(`RCPT TO:<${o.to(i)}>`, '250');
          await c.cmd('DATA', '354');
        }
        const t = performance.now();
        sock.write(data);
        const r = await c.reply();
        if (!r.startsWith('250')) throw new Error(`end of data → ${r}`);
        latencies.push(performance.now() - t);
      } catch (e) {
        failed++;
        if (errors.length < 10) errors.push((e as Error).message);
        await c.cmd('RSET', '250').catch(() => undefined);
      }
    }
    sock.write('QUIT\r\n');
    await c.reply().catch(() => undefined);
    sock.destroy();
  }
  await Promise.all(Array.from({ length: o.connections }, () => worker()));
  return { sent: latencies.length, failed, wallMs: performance.now() - t0, latenciesMs: latencies, errors };
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** A 10 KB-ish RFC 5322 message with CRLF line ends and no line starting with a dot. */
export function makeMessage(bytes: number, from: string, to: string): Buffer {
  const head = `From: <${from}>\r\nTo: <${to}>\r\nSubject: bench\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@bench.example>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
  const line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz.\r\n';
  let body = '';
  while (head.length + body.length + line.length <= bytes) body += line;
  return Buffer.from(head + body);
}
