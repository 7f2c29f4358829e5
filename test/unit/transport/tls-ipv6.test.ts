// STARTTLS policies (none / opportunistic / required / verify, RFC 3207 and RFC 7435) against a
// TLS-capable loopback sink and one without TLS, and IPv6 MX addresses (AAAA → ::1), with
// fall-over from an IPv6 address that does not answer to the IPv4 one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { TLSSocket } from 'node:tls';
import { startDnsServer, type RunningDnsServer } from '../../helpers/dns-server.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { testTls } from '../../helpers/tls.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { fromObject } from '../../../src/config/load.js';
import { silentLogger } from '../../../src/log/logger.js';
import type { RemoteVia } from '../../../src/delivery/router.js';

let dns: RunningDnsServer;
let tlsSink: RunningSink;
let plainSink: RunningSink;
let cert: string;
const outbounds: Outbound[] = [];

before(async () => {
  const tls = await testTls();
  cert = tls.cert;
  tlsSink = await startSink({ tls }, 0, '127.0.0.71');
  plainSink = await startSink({}, tlsSink.port, '127.0.0.72');
  dns = await startDnsServer({
    records: {
      // The certificate names mx.example.test.
      'tls.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
      'mx.example.test': { A: ['127.0.0.71'] },
      'wrongname.test': { MX: [{ exchange: 'mx.other.test', priority: 10 }] },
      'mx.other.test': { A: ['127.0.0.71'] },
      'plain.test': { MX: [{ exchange: 'mx.plain.test', priority: 10 }] },
      'mx.plain.test': { A: ['127.0.0.72'] },
    },
  });
});
after(async () => {
  for (const o of outbounds) o.close();
  await tlsSink.stop();
  await plainSink.stop();
  await dns.stop();
});

function outbound(tls: string, opts: { ca?: boolean; port?: number } = {}) {
  const config = fromObject({ hostname: 'client.example.test', data_dir: '/nonexistent', dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: opts.port ?? tlsSink.port, tls } }, null);
  const ob = new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000, ...(opts.ca ? { tlsCa: cert } : {}) } });
  outbounds.push(ob);
  return ob;
}

const MX: RemoteVia = { type: 'mx' };
let n = 0;
async function send(ob: Outbound, domain: string, via: RemoteVia = MX) {
  const address = `u${n++}@${domain}`;
  const r = await ob.deliver(domain, via, { mailFrom: 'a@example.test', recipients: [{ address }], message: Buffer.from(`Subject: ${address}\r\n\r\nx\r\n`) });
  return { ...r.get(address)!, address };
}
const last = (s: RunningSink, address: string) => s.messages.find((m) => m.to[0] === address);

test('none: never STARTTLS, even when offered', async () => {
  const r = await send(outbound('none'), 'tls.test');
  assert.equal(r.status, 'sent');
  assert.equal(last(tlsSink, r.address)!.secure, false);
});

test('opportunistic: TLS when offered (any certificate), clear text when not', async () => {
  const ob = outbound('opportunistic');
  const a = await send(ob, 'tls.test');
  assert.equal(a.status, 'sent');
  assert.equal(last(tlsSink, a.address)!.secure, true);
  const b = await send(ob, 'plain.test');
  assert.equal(b.status, 'sent');
  assert.equal(last(plainSink, b.address)!.secure, false);
});

test('required: TLS with any certificate; no STARTTLS → deferred 4.7.5, nothing sent', async () => {
  const ob = outbound('required');
  const a = await send(ob, 'tls.test');
  assert.equal(a.status, 'sent');
  assert.equal(last(tlsSink, a.address)!.secure, true);
  const b = await send(ob, 'plain.test');
  assert.deepEqual([b.status, b.enhanced], ['temp', '4.7.5']);
  assert.equal(last(plainSink, b.address), undefined);
});

test('verify: a trusted certificate for the MX name passes; untrusted or wrong name → deferred 4.7.5', async () => {
  const a = await send(outbound('verify', { ca: true }), 'tls.test');
  assert.equal(a.status, 'sent', a.text);
  assert.equal(last(tlsSink, a.address)!.secure, true);
  // Self-signed and not in the trust store.
  const b = await send(outbound('verify'), 'tls.test');
  assert.deepEqual([b.status, b.enhanced], ['temp', '4.7.5'], b.text);
  // Trusted, but issued for mx.example.test, not for the MX name mx.other.test.
  const c = await send(outbound('verify', { ca: true }), 'wrongname.test');
  assert.deepEqual([c.status, c.enhanced], ['temp', '4.7.5'], c.text);
  // No STARTTLS at all.
  const d = await send(outbound('verify', { ca: true }), 'plain.test');
  assert.deepEqual([d.status, d.enhanced], ['temp', '4.7.5']);
  for (const x of [b, c]) assert.equal(last(tlsSink, x.address), undefined);
});

test('a route sets its own level: ?tls=required over outbound.tls none', async () => {
  const ob = outbound('none');
  const via: RemoteVia = { type: 'route', nexthop: `smtp://127.0.0.71:${tlsSink.port}?tls=required`, mode: 'queue', verify: 'none', match: 'routed.test' };
  const r = await send(ob, 'routed.test', via);
  assert.equal(r.status, 'sent');
  assert.equal(last(tlsSink, r.address)!.secure, true);
});

/**
 * A next hop that offers STARTTLS and then breaks the handshake on the first connection, and
 * takes mail in clear on the next one (RFC 7435 §3 fall-back). Returns the accepted RCPTs.
 */
async function brokenTlsServer(): Promise<{ server: Server; port: number; rcpts: string[]; connections: () => number }> {
  const rcpts: string[] = [];
  let connections = 0;
  const server = createServer((sock) => {
    const first = connections++ === 0;
    let buf = '';
    let inData = false;
    let handshake = false;
    sock.write('220 broken.test ESMTP\r\n');
    sock.on('data', (c: Buffer) => {
      if (handshake) {
        // The client's TLS hello gets an answer that is no TLS at all.
        sock.end('this is not a TLS server hello\r\n');
        return;
      }
      buf += c.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            sock.write('250 2.0.0 ok\r\n');
          }
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') sock.write('250-broken.test\r\n250 STARTTLS\r\n');
        else if (verb === 'STAR' && first) {
          sock.write('220 2.0.0 go ahead\r\n');
          handshake = true;
        } else if (verb === 'MAIL') sock.write('250 2.1.0 ok\r\n');
        else if (verb === 'RCPT') {
          rcpts.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          sock.write('250 2.1.5 ok\r\n');
        } else if (verb === 'DATA') {
          inData = true;
          sock.write('354 go\r\n');
        } else if (verb === 'QUIT') sock.end('221 bye\r\n');
        else sock.write('502 5.5.1 no\r\n');
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.74', () => r()));
  return { server, port: (server.address() as { port: number }).port, rcpts, connections: () => connections };
}

test('opportunistic: a failed TLS handshake is retried in clear on a new connection', async () => {
  const b = await brokenTlsServer();
  try {
    const ob = outbound('opportunistic');
    const via: RemoteVia = { type: 'route', nexthop: `smtp://127.0.0.74:${b.port}`, mode: 'queue', verify: 'none', match: 'broken.test' };
    const r = await send(ob, 'broken.test', via);
    assert.equal(r.status, 'sent', r.text);
    assert.deepEqual(b.rcpts, [r.address]);
    assert.equal(b.connections(), 2);
    // Under `required` the same next hop gets nothing.
    const req = await send(outbound('required'), 'broken.test', { ...via, nexthop: `smtp://127.0.0.74:${b.port}?tls=required` });
    assert.deepEqual([req.status, req.enhanced], ['temp', '4.7.5']);
    assert.deepEqual(b.rcpts.length, 1);
  } finally {
    await new Promise<void>((r) => b.server.close(() => r()));
  }
});

test('IPv6: an AAAA-only MX at ::1 gets the mail; an AAAA that does not answer falls over to the A', async () => {
  const six = await startSink({}, 0, '::1');
  const four = await startSink({}, six.port, '127.0.0.73');
  try {
    dns.setRecords({
      'six.test': { MX: [{ exchange: 'mx.six.test', priority: 10 }] },
      'mx.six.test': { AAAA: ['::1'] },
      'dual.test': { MX: [{ exchange: 'mx.dual.test', priority: 10 }] },
      'mx.dual.test': { AAAA: ['::1'], A: ['127.0.0.73'] },
    });
    const ob = outbound('none', { port: six.port });
    const a = await send(ob, 'six.test');
    assert.equal(a.status, 'sent', a.text);
    assert.ok(last(six, a.address));
    // Both families: IPv6 first (mx.ts), so ::1 gets it while it is up.
    const b = await send(ob, 'dual.test');
    assert.equal(b.status, 'sent');
    assert.ok(last(six, b.address));
    assert.equal(last(four, b.address), undefined);
    // A route to an IPv6 literal.
    const via: RemoteVia = { type: 'route', nexthop: `smtp://[::1]:${six.port}`, mode: 'queue', verify: 'none', match: 'lit.test' };
    const c = await send(ob, 'lit.test', via);
    assert.equal(c.status, 'sent');
    assert.ok(last(six, c.address));
    await six.down();
    const d = await send(outbound('none', { port: six.port }), 'dual.test');
    assert.equal(d.status, 'sent', d.text);
    assert.ok(last(four, d.address), 'delivered over IPv4 after ::1 refused');
  } finally {
    await six.stop();
    await four.stop();
  }
});

test('required: replies injected in clear after the STARTTLS 220 fail the connection (4.7.5), nothing is sent', async () => {
  const { key, cert: serverCert } = await testTls();
  const rcpts: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => undefined);
    sock.write('220 inject.test ESMTP\r\n');
    let buf = '';
    const onPlain = (c: Buffer) => {
      buf += c.toString('latin1');
      if (/^EHLO/im.test(buf) && !/STARTTLS/i.test(buf)) {
        buf = '';
        sock.write('250-inject.test\r\n250 STARTTLS\r\n');
      } else if (/STARTTLS/i.test(buf)) {
        sock.off('data', onPlain);
        // The injection: a whole EHLO answer sent in clear before the handshake.
        sock.write('220 2.0.0 go ahead\r\n250-injected\r\n250 SIZE 10\r\n');
        const t = new TLSSocket(sock, { isServer: true, key, cert: serverCert });
        t.on('error', () => undefined);
        let lines = '';
        t.on('data', (d: Buffer) => {
          lines += d.toString('latin1');
          let i: number;
          while ((i = lines.indexOf('\r\n')) >= 0) {
            const line = lines.slice(0, i);
            lines = lines.slice(i + 2);
            const verb = line.slice(0, 4).toUpperCase();
            if (verb === 'EHLO') t.write('250-inject.test\r\n250 8BITMIME\r\n');
            else if (verb === 'RCPT') {
              rcpts.push(line);
              t.write('250 2.1.5 ok\r\n');
            } else t.write('250 2.0.0 ok\r\n');
          }
        });
      }
    };
    sock.on('data', onPlain);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.75', () => r()));
  try {
    const port = (server.address() as { port: number }).port;
    const via: RemoteVia = { type: 'route', nexthop: `smtp://127.0.0.75:${port}?tls=required`, mode: 'queue', verify: 'none', match: 'inject.test' };
    const r = await send(outbound('required'), 'inject.test', via);
    assert.deepEqual([r.status, r.enhanced], ['temp', '4.7.5'], r.text);
    assert.match(r.text, /after its STARTTLS 220/);
    assert.deepEqual(rcpts, []);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
