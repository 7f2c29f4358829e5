// A raw SMTP transcript client for tests: `await s.send('RCPT TO:<a@b>'); await s.expect('250 2.1.5')`.
// It reads whole replies (multi-line joined) and never interprets them, so tests see exactly the
// bytes the server wrote.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import assert from 'node:assert/strict';

export class SmtpTranscript {
  private buf = '';
  private replies: string[] = [];
  private waiters: ((r: string | null) => void)[] = [];
  closed = false;
  /** Complete replies received so far (read or not). */
  received = 0;
  constructor(readonly sock: Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      let lines: string[] = [];
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).replace(/\r$/, '');
        this.buf = this.buf.slice(nl + 1);
        lines.push(line);
        if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
          this.push(lines.join('\n'));
          lines = [];
        }
      }
      if (lines.length) this.buf = lines.join('\r\n') + '\r\n' + this.buf;
    });
    const end = () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w(null);
    };
    sock.on('close', end);
    sock.on('error', end);
  }
  private push(r: string) {
    this.received++;
    const w = this.waiters.shift();
    if (w) w(r);
    else this.replies.push(r);
  }
  /** Next complete reply, or null when the server closed the connection. */
  reply(timeoutMs = 10_000): Promise<string | null> {
    const r = this.replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.closed) return Promise.resolve(null);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('no reply in time')), timeoutMs);
      this.waiters.push((x) => {
        clearTimeout(t);
        res(x);
      });
    });
  }
  send(line: string | Buffer): void {
    this.sock.write(typeof line === 'string' ? line + '\r\n' : line);
  }
  /** Asserts the next reply starts with `prefix` and returns it. */
  async expect(prefix: string): Promise<string> {
    const r = await this.reply();
    assert.ok(r !== null, `expected "${prefix}…" but the connection closed`);
    assert.ok(r.startsWith(prefix), `expected "${prefix}…", got "${r}"`);
    return r;
  }
  async cmd(line: string, prefix: string): Promise<string> {
    this.send(line);
    return this.expect(prefix);
  }
  close(): void {
    this.sock.destroy();
  }
}

export async function openSmtp(port: number, opts: { host?: string; localAddress?: string; tls?: boolean } = {}): Promise<SmtpTranscript> {
  const host = opts.host ?? '127.0.0.1';
  const sock = opts.tls
    ? tlsConnect({ host, port, rejectUnauthorized: false })
    : connect({ host, port, localAddress: opts.localAddress });
  await new Promise<void>((res, rej) => sock.once(opts.tls ? 'secureConnect' : 'connect', () => res()).once('error', rej));
  return new SmtpTranscript(sock);
}
