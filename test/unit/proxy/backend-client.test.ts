// The pieces of the backend client that are pure: dot-stuffing (RFC 5321 §4.5.2), xtext for
// XCLIENT values (RFC 3461 §4), and how a backend reply becomes ours (code kept, enhanced code
// of the right class), plus the route schema's callout options; and one socket test: plaintext
// injected after the STARTTLS 220 drops the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { BackendError, BackendSession, dotStuff, xtext } from '../../../src/proxy/backend-client.js';
import { testTls } from '../../helpers/tls.js';
import { replyFromBackend } from '../../../src/proxy/inline.js';
import { fromObject } from '../../../src/config/load.js';

test('dotStuff doubles leading dots and ends with <CRLF>.<CRLF>', () => {
  const cases: [string, string][] = [
    ['a\r\nb\r\n', 'a\r\nb\r\n.\r\n'],
    ['.a\r\n..b\r\n.\r\nc', '..a\r\n...b\r\n..\r\nc\r\n.\r\n'],
    ['', '\r\n.\r\n'],
  ];
  for (const [input, want] of cases) assert.equal(dotStuff(Buffer.from(input, 'latin1')).toString('latin1'), want, JSON.stringify(input));
});

test('xtext encodes +, = and bytes outside 33-126', () => {
  assert.equal(xtext('[UNAVAILABLE]'), '[UNAVAILABLE]');
  assert.equal(xtext('a+b=c d'), 'a+2Bb+3Dc+20d');
  assert.equal(xtext('ü'), '+C3+BC');
});

test('replyFromBackend keeps the code and text and fixes a missing or wrong-class enhanced code', () => {
  assert.equal(replyFromBackend({ code: 550, enhanced: '5.1.1', text: 'User unknown', lines: [] }, '5.1.0').toString(), '550 5.1.1 User unknown');
  assert.equal(replyFromBackend({ code: 550, text: 'No such user', lines: [] }, '5.1.0').toString(), '550 5.1.0 No such user');
  assert.equal(replyFromBackend({ code: 450, enhanced: '5.1.1', text: 'later', lines: [] }, '5.1.0').toString(), '450 4.1.0 later');
  assert.equal(replyFromBackend({ code: 250, text: 'Ok', lines: [] }, '2.0.0').toString(), '250 2.0.0 Ok');
  assert.equal(replyFromBackend({ code: 354, text: 'go ahead', lines: [] }, '4.0.0').code, 451, 'a 3yz where none belongs is a failure');
});

test('route callout options: defaults, durations, and bad values refused with their key path', () => {
  const c = fromObject({ routes: { 'a.example': { nexthop: 'smtp://127.0.0.1:25', verify: 'callout', callout: { positive_ttl: '2h' } } } }, null);
  const r = c.routes['a.example']!;
  assert.ok('callout' in r && r.callout);
  assert.deepEqual(r.callout, { positive_ttl: 7_200_000, negative_ttl: 600_000, timeout: 30_000, on_unreachable: 'tempfail' });
  assert.throws(() => fromObject({ routes: { 'a.example': { nexthop: 'smtp://h:25', callout: { on_unreachable: 'maybe' } } } }, null), /routes\."a\.example"\.callout\.on_unreachable: expected one of "tempfail", "accept"/);
  assert.throws(() => fromObject({ routes: { 'a.example': { nexthop: 'smtp://h:25', callout: { ttl: '1h' } } } }, null), /routes\."a\.example"\.callout/);
});

test('STARTTLS: lines sent in clear after the 220 (an injection) drop the connection with a tls error', async () => {
  const { key, cert } = await testTls();
  const sockets = new Set<Socket>();
  const srv = createServer((sock: Socket) => {
    sockets.add(sock);
    sock.write('220 backend ESMTP\r\n');
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('STARTTLS')) {
        sock.off('data', onData);
        sock.write('220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n');
        const t = new TLSSocket(sock, { isServer: true, key, cert });
        t.on('data', () => t.write('250 real-after-tls\r\n'));
        t.on('error', () => undefined);
      } else if (buf.includes('EHLO')) {
        buf = '';
        sock.write('250-backend\r\n250 STARTTLS\r\n');
      }
    };
    sock.on('data', onData);
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  try {
    const port = (srv.address() as AddressInfo).port;
    await assert.rejects(
      async () => {
        const s = await BackendSession.establish({ protocol: 'smtp', host: '127.0.0.1', port, secure: false, tls: 'required' } as Parameters<typeof BackendSession.establish>[0], { helo: 'gw.test', timeoutMs: 2000, tls: 'required' });
        s.destroy();
      },
      (e: unknown) => e instanceof BackendError && e.kind === 'tls' && /after its STARTTLS 220/.test(e.message),
    );
  } finally {
    for (const s of sockets) s.destroy();
    srv.close();
  }
});
