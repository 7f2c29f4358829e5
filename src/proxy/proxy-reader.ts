// Reads the PROXY protocol header (v1 or v2, proxy-protocol.ts) off a freshly accepted socket
// before smtp-server's session sees it. Bytes after the header are pushed back (unshift), so the
// SMTP session starts exactly at the first client byte.
//
// Who calls it: PosternServer._handleProxy (src/smtp/connection.ts), for peers listed in
// `listen.<name>.proxy_protocol.trusted` only. The server's pre-connect guard (idle timeout,
// pending-socket limit) covers the wait, as for smtp-server's own v1 reader.
// On a malformed header the socket gets one 421 line and is closed; the callback hears the error.
import type { Socket } from 'node:net';
import { parseProxyHeader, type ProxySource, V2_MAX_LENGTH } from './proxy-protocol.js';

export class ProxyHeaderError extends Error {
  override name = 'ProxyHeaderError';
}

/** Resolves with the header's source, or rejects with ProxyHeaderError (the socket is then closing). */
export function readProxyHeader(socket: Socket, refusal: string): Promise<ProxySource> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const cleanup = () => {
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      socket.removeListener('end', onEnd);
    };
    const fail = (reason: string, tell: boolean) => {
      if (settled) return;
      settled = true;
      cleanup();
      // A late EPIPE while the refusal is flushed must not become an uncaught exception.
      socket.on('error', () => undefined);
      if (tell && socket.writable) {
        socket.end(`${refusal}\r\n`);
        setTimeout(() => socket.destroy(), 500).unref();
      } else socket.destroy();
      reject(new ProxyHeaderError(reason));
    };
    const onError = (e: Error) => fail(`socket error before the PROXY header: ${e.message}`, false);
    const onClose = () => fail('closed before the PROXY header', false);
    const onEnd = () => fail('ended before the PROXY header', false);
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!settled && (chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        const r = parseProxyHeader(buf);
        if (r.kind === 'more') {
          if (buf.length > V2_MAX_LENGTH) fail('PROXY header too long', true);
          continue;
        }
        if (r.kind === 'bad') return fail(r.reason, true);
        settled = true;
        cleanup();
        const rest = buf.subarray(r.consumed);
        if (rest.length) socket.unshift(rest);
        return resolve(r.source);
      }
    };
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('end', onEnd);
  });
}
