// A small HTTP/1.1 keep-alive load client for the API benchmark, in the spirit of wrk: each
// connection sends one request, reads the whole answer (Content-Length framed, as fastify sends
// it) and sends the next. It does far less work per request than node:http's client, so on a
// 2-core machine the figures describe the server rather than the client's own event loop.
// Latency is measured from the write of the request to the last byte of the answer.
import { connect, type Socket } from 'node:net';

export interface HttpRequestSpec {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface HttpLoadResult {
  ms: number[];
  seconds: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');

/** One keep-alive connection that runs requests one after another. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((r: { status: number }) => void) | null = null;
  private failed: ((e: Error) => void) | null = null;

  constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on('data', (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      this.parse();
    });
    const fail = (e: Error) => this.failed?.(e);
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed by the server')));
  }

  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => resolve(new Conn(sock))).once('error', reject);
    });
  }

  send(raw: Buffer): Promise<{ status: number }> {
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failed = reject;
      this.sock.write(raw);
    });
  }

  private parse(): void {
    const end = this.buf.indexOf(HEADER_END);
    if (end < 0 || !this.waiting) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!m) {
      this.failed?.(new Error(`answer without Content-Length: ${head.split('\r\n')[0]}`));
      return;
    }
    const total = end + 4 + Number(m[1]);
    if (this.buf.length < total) return;
    this.buf = this.buf.subarray(total);
    const done = this.waiting;
    this.waiting = null;
    done({ status });
  }

  close(): void {
    this.sock.destroy();
  }
}

function encode(port: number, r: HttpRequestSpec): Buffer {
  const body = r.body ?? '';
  const headers = { host: `127.0.0.1:${port}`, ...(body ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}), ...r.headers };
  const lines = [`${r.method} ${r.path} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/**
 * Sends `n` requests (`make(i)` builds the i-th) over `concurrency` keep-alive connections, each
 * with one request in flight. Any answer outside 2xx fails the run.
 */
export async function runHttpLoad(port: number, n: number, concurrency: number, make: (i: number) => HttpRequestSpec): Promise<HttpLoadResult> {
  const conns = await Promise.all(Array.from({ length: concurrency }, () => Conn.open(port)));
  const ms: number[] = [];
  let next = 0;
  const t0 = performance.now();
  try {
    await Promise.all(
      conns.map(async (c) => {
        while (next < n) {
          const i = next++;
          const spec = make(i);
          const raw = encode(port, spec);
          const t = performance.now();
          const { status } = await c.send(raw);
          if (status < 200 || status >= 300) throw new Error(`${spec.method} ${spec.path}: ${status}`);
          ms.push(performance.now() - t);
        }
      }),
    );
  } finally {
    for (const c of conns) c.close();
  }
  return { ms, seconds: (performance.now() - t0) / 1000 };
}
