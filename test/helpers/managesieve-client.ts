// A raw ManageSieve client for protocol tests (RFC 5804): sends lines as given and reads whole
// responses (data lines, literals included, up to the OK/NO/BYE status line). STARTTLS upgrades
// the same socket without checking the certificate (the test server's is self-signed).
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface SieveResponse {
  /** Data lines before the status; a literal is joined to its line as "{n}\r\n<octets>". */
  lines: string[];
  /** The status line, e.g. 'OK "Done"' or 'NO (NONEXISTENT) "…"'. */
  status: string;
}

export class SieveTranscript {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private ended = false;

  private constructor(private socket: Socket) {
    this.attach(socket);
  }

  static async open(port: number): Promise<SieveTranscript> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((res, rej) => socket.once('connect', res).once('error', rej));
    return new SieveTranscript(socket);
  }

  private attach(socket: Socket): void {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async more(timeoutMs: number): Promise<void> {
    if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf.toString())}`);
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`timeout; unread: ${JSON.stringify(this.buf.toString())}`)), timeoutMs);
      this.waiters.push(() => {
        clearTimeout(t);
        res();
      });
    });
  }

  /** True once the server has closed the connection. */
  get closed(): boolean {
    return this.ended;
  }

  /** Reads one line (a literal announced at its end is appended, with the CRLF that follows). */
  async line(timeoutMs = 5000): Promise<string> {
    for (;;) {
      const nl = this.buf.indexOf('\r\n');
      if (nl >= 0) {
        const text = this.buf.subarray(0, nl).toString('utf8');
        const m = /\{(\d+)\}$/.exec(text);
        if (!m) {
          this.buf = this.buf.subarray(nl + 2);
          return text;
        }
        const n = Number(m[1]);
        if (this.buf.length >= nl + 2 + n) {
          const lit = this.buf.subarray(nl + 2, nl + 2 + n).toString('utf8');
          this.buf = this.buf.subarray(nl + 2 + n);
          // The rest of the line after the literal (usually just CRLF).
          const rest = await this.line(timeoutMs);
          return `${text}\r\n${lit}${rest}`;
        }
      }
      await this.more(timeoutMs);
    }
  }

  /** Reads up to and including the next OK / NO / BYE line. */
  async response(timeoutMs = 5000): Promise<SieveResponse> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(timeoutMs);
      if (/^(OK|NO|BYE)\b/.test(l)) return { lines, status: l };
      lines.push(l);
    }
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Sends a command line and returns its response; fails unless the status matches `expect`. */
  async cmd(line: string, expect: RegExp | string = /^OK/): Promise<SieveResponse> {
    this.send(line + '\r\n');
    const r = await this.response();
    const ok = typeof expect === 'string' ? r.status.startsWith(expect) : expect.test(r.status);
    if (!ok) throw new Error(`${line} → ${r.status} (expected ${String(expect)})`);
    return r;
  }

  /** STARTTLS, handshake, then the capabilities the server sends unasked (RFC 5804 §2.2). */
  async starttls(): Promise<SieveResponse> {
    this.send('STARTTLS\r\n');
    return this.starttlsAfterSend();
  }

  /** As starttls(), when STARTTLS was already sent (possibly with more commands after it). */
  async starttlsAfterSend(): Promise<SieveResponse> {
    const ok = await this.response();
    if (!ok.status.startsWith('OK')) throw new Error(`STARTTLS → ${ok.status}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false, servername: 'mx.example.test' });
    await new Promise<void>((res, rej) => secure.once('secureConnect', res).once('error', rej));
    this.socket = secure;
    this.buf = Buffer.alloc(0);
    this.attach(secure);
    return this.response();
  }

  /** AUTHENTICATE "PLAIN" with an initial response. */
  plain(user: string, password: string, authzid = ''): string {
    return Buffer.from(`${authzid}\0${user}\0${password}`).toString('base64');
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    while (!this.ended) await this.more(timeoutMs).catch((e: unknown) => {
      if (!this.ended) throw e;
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
