// In-line proxy (`mode: proxy`) towards backends that need more than a plain connection, and
// backend connection reuse, through the real daemon:
//   - STARTTLS by the route's policy and AUTH with the route's credentials (a scripted smtp-server
//     backend with a self-signed certificate that requires AUTH);
//   - a policy that cannot be met → 451 4.7.5 at RCPT, never a 250: `required` against a backend
//     without STARTTLS and against one whose TLS handshake fails, `verify` against an untrusted
//     certificate; refused credentials → 451 4.4.1;
//   - `opportunistic` against the failing handshake → delivered in clear on a second connection;
//   - recipient callouts (`verify: callout`) use the route's TLS policy and credentials as well;
//   - reuse: several transactions (and an aborted one) over one backend connection, RSET between;
//     `outbound.reuse.max_messages` and `idle_timeout` apply; a backend that took XCLIENT keeps a
//     connection per original client.
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { testTls } from '../helpers/tls.js';
import { waitFor } from '../helpers/wait.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

interface Backend {
  port: number;
  messages: { to: string[]; secure: boolean; user: string; addr: string }[];
  connections: number;
  active: number;
  stop(): Promise<void>;
}

/** smtp-server backend: STARTTLS when `tls`, AUTH required when `auth`, XCLIENT / XFORWARD when asked. */
async function startBackend(opts: { tls?: boolean; auth?: { user: string; pass: string }; xclient?: boolean; xforward?: boolean } = {}): Promise<Backend> {
  const cert = opts.tls ? await testTls() : undefined;
  const b: Backend = { port: 0, messages: [], connections: 0, active: 0, stop: async () => undefined };
  const server = new SMTPServer({
    logger: false,
    ...(cert ? { key: cert.key, cert: cert.cert } : {}),
    disabledCommands: [...(opts.tls ? [] : ['STARTTLS']), ...(opts.auth ? [] : ['AUTH'])],
    authOptional: !opts.auth,
    ...(opts.xclient ? { useXClient: ['127.0.0.1'] } : {}),
    ...(opts.xforward ? { useXForward: ['127.0.0.1'] } : {}),
    closeTimeout: 100,
    onConnect(_s, cb) {
      b.connections++;
      b.active++;
      cb();
    },
    onClose() {
      b.active--;
    },
    onAuth(a, _s, cb) {
      if (opts.auth && a.username === opts.auth.user && a.password === opts.auth.pass) return cb(null, { user: a.username });
      cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
    },
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        b.messages.push({ to: session.envelope.rcptTo.map((r) => r.address), secure: session.secure, user: typeof session.user === 'string' ? session.user : '', addr: session.remoteAddress });
        cb(null, '2.0.0 Ok: queued');
      });
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  b.port = (server.server.address() as { port: number }).port;
  b.stop = () => new Promise<void>((r) => server.close(() => r()));
  return b;
}

/**
 * A raw backend that offers STARTTLS, says 220 to it, and then answers the handshake with
 * plain text (the handshake fails). In clear it takes mail like any server.
 */
async function startBrokenTlsBackend(): Promise<Backend & { server: Server }> {
  const b = { port: 0, messages: [] as Backend['messages'], connections: 0, active: 0, stop: async (): Promise<void> => undefined, server: createServer() };
  b.server.on('connection', (sock: Socket) => {
    b.connections++;
    b.active++;
    sock.on('close', () => b.active--);
    sock.on('error', () => undefined);
    let buf = '';
    let inData = false;
    let to: string[] = [];
    sock.write('220 broken.tls ESMTP\r\n');
    sock.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            b.messages.push({ to, secure: false, user: '', addr: '' });
            to = [];
            sock.write('250 2.0.0 Ok: queued\r\n');
          }
          continue;
        }
        const cmd = line.slice(0, 4).toUpperCase();
        if (cmd === 'EHLO') sock.write('250-broken.tls\r\n250-PIPELINING\r\n250 STARTTLS\r\n');
        else if (cmd === 'STAR') {
          sock.write('220 2.0.0 Ready to start TLS\r\n');
          sock.end('this is not a TLS server hello\r\n');
        } else if (cmd === 'MAIL') sock.write('250 2.1.0 Ok\r\n');
        else if (cmd === 'RCPT') {
          to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          sock.write('250 2.1.5 Ok\r\n');
        } else if (cmd === 'DATA') {
          inData = true;
          sock.write('354 go ahead\r\n');
        } else if (cmd === 'QUIT') sock.end('221 2.0.0 Bye\r\n');
        else sock.write('250 2.0.0 Ok\r\n');
      }
    });
  });
  await new Promise<void>((r) => b.server.listen(0, '127.0.0.1', () => r()));
  b.port = (b.server.address() as { port: number }).port;
  b.stop = () => new Promise<void>((r) => b.server.close(() => r()));
  return b;
}

async function client(port: number, from?: string): Promise<SmtpTranscript> {
  const s = await openSmtp(port);
  if (from) s.send(buildProxyHeader(1, { address: from, port: 40000 }, { address: '127.0.0.1', port: 25 }));
  await s.expect('220');
  await s.cmd('EHLO client.example', '250');
  return s;
}

async function transaction(s: SmtpTranscript, rcpts: string[], want = '250'): Promise<void> {
  await s.cmd('MAIL FROM:<sender@remote.example>', '250');
  for (const r of rcpts) await s.cmd(`RCPT TO:<${r}>`, '250');
  await s.cmd('DATA', '354');
  await s.cmd(`Subject: to ${rcpts.join(', ')}\r\n\r\nhello\r\n.`, want);
}

describe('in-line proxy: STARTTLS and AUTH towards the backend', () => {
  let secure: Backend;
  let plain: Backend;
  let broken: Backend;
  let d: RunningDaemon;
  before(async () => {
    secure = await startBackend({ tls: true, auth: { user: 'gw', pass: 's3cret' } });
    plain = await startBackend();
    broken = await startBrokenTlsBackend();
    d = await startDaemon({
      relay: { networks: [] },
      plugins: [],
      routes: {
        'tls.example': { nexthop: `smtp://gw:s3cret@127.0.0.1:${secure.port}?tls=required`, mode: 'proxy' },
        'badpass.example': { nexthop: `smtp://gw:wrong@127.0.0.1:${secure.port}?tls=required`, mode: 'proxy' },
        'verify.example': { nexthop: `smtp://gw:s3cret@127.0.0.1:${secure.port}?tls=verify`, mode: 'proxy' },
        'notls.example': { nexthop: `smtp://127.0.0.1:${plain.port}?tls=required`, mode: 'proxy' },
        'broken.example': { nexthop: `smtp://127.0.0.1:${broken.port}?tls=required`, mode: 'proxy' },
        'maybe.example': { nexthop: `smtp://127.0.0.1:${broken.port}?tls=opportunistic`, mode: 'proxy' },
        // Queue mode with a recipient callout: the probe needs STARTTLS and AUTH too.
        'probe.example': { nexthop: `smtp://gw:s3cret@127.0.0.1:${secure.port}?tls=required`, verify: 'callout' },
        'probe-notls.example': { nexthop: `smtp://127.0.0.1:${plain.port}?tls=required`, verify: 'callout' },
      },
    });
  });
  after(async () => {
    await d.stop();
    await removeDir(d.dir);
    for (const b of [secure, plain, broken]) await b.stop();
  });

  it('tls=required with credentials: STARTTLS, then AUTH, then the mail', { timeout: 30_000 }, async () => {
    const s = await client(d.ports.smtp!);
    await transaction(s, ['alice@tls.example'], '250 2.0.0 Ok: queued');
    s.close();
    assert.deepEqual(secure.messages.map(({ to, secure: sec, user }) => ({ to, sec, user })), [{ to: ['alice@tls.example'], sec: true, user: 'gw' }]);
    // Log lines arrive through the daemon's stdout, possibly after the replies.
    // The next hop is logged without its credentials.
    const logged = await waitFor(() => d.logs.find((l) => l.evt === 'proxy.session' && l.nexthop === `smtp://***@127.0.0.1:${secure.port}?tls=required`), (l) => l !== undefined);
    assert.equal(logged?.tls, true);
  });

  it('policies that cannot be met are 451 at RCPT, never 250; refused credentials too', { timeout: 30_000 }, async () => {
    const cases: [string, string][] = [
      ['x@notls.example', '451 4.7.5'], // required, no STARTTLS offered
      ['x@broken.example', '451 4.7.5'], // required, the handshake fails
      ['x@verify.example', '451 4.7.5'], // verify, self-signed certificate
      ['x@badpass.example', '451 4.4.1'], // AUTH refused
    ];
    for (const [rcpt, want] of cases) {
      const s = await client(d.ports.smtp!);
      await s.cmd('MAIL FROM:<sender@remote.example>', '250');
      await s.cmd(`RCPT TO:<${rcpt}>`, want);
      // No recipient was taken, so there is nothing to send.
      await s.cmd('DATA', '503');
      s.close();
    }
    assert.equal(plain.messages.length, 0);
    assert.equal(broken.messages.length, 0);
    assert.equal(secure.messages.filter((m) => m.to.some((t) => !t.endsWith('@tls.example'))).length, 0);
  });

  it('tls=opportunistic: a failed handshake is retried in clear on a new connection', { timeout: 30_000 }, async () => {
    const before = broken.connections;
    const s = await client(d.ports.smtp!);
    await transaction(s, ['bob@maybe.example'], '250 2.0.0 Ok: queued');
    s.close();
    assert.deepEqual(broken.messages.map((m) => m.to), [['bob@maybe.example']]);
    assert.equal(broken.connections - before, 2, 'one connection for the failed handshake, one in clear');
  });

  it('recipient callouts follow the route too: STARTTLS and AUTH before the probe; no TLS, no probe', { timeout: 30_000 }, async () => {
    const s = await client(d.ports.smtp!);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    // The backend takes MAIL only after AUTH, which it offers only after STARTTLS.
    await s.cmd('RCPT TO:<carol@probe.example>', '250');
    await s.cmd('RSET', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<carol@probe-notls.example>', '451 4.4.3');
    s.close();
  });

  it('the route password is in no log line (proxy sessions, transactions, callouts)', async () => {
    await waitFor(() => d.logs.filter((l) => l.evt === 'proxy.session' || l.evt === 'smtp.transaction').length, (n) => n >= 2);
    const leaks = d.logs.filter((l) => JSON.stringify(l).includes('s3cret'));
    assert.deepEqual(leaks, []);
  });
});

describe('in-line proxy: backend connection reuse', () => {
  let plain: Backend;
  let xc: Backend;
  let xf: Backend;
  const daemons: RunningDaemon[] = [];
  before(async () => {
    plain = await startBackend();
    xc = await startBackend({ xclient: true });
    xf = await startBackend({ xforward: true });
  });
  after(async () => {
    for (const d of daemons) {
      await d.stop();
      await removeDir(d.dir);
    }
    await plain.stop();
    await xc.stop();
    await xf.stop();
  });

  const daemon = async (reuse: Record<string, unknown>) => {
    const d = await startDaemon({
      relay: { networks: [] },
      plugins: [],
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.1'] } } },
      outbound: { reuse },
      routes: {
        'corp.example': { nexthop: `smtp://127.0.0.1:${plain.port}`, mode: 'proxy' },
        'xc.example': { nexthop: `smtp://127.0.0.1:${xc.port}`, mode: 'proxy' },
        'xf.example': { nexthop: `smtp://127.0.0.1:${xf.port}`, mode: 'proxy', forward_client: 'xforward' },
      },
    });
    daemons.push(d);
    return d;
  };

  it('transactions of several clients share one backend connection, RSET between (an aborted one too)', { timeout: 30_000 }, async () => {
    const d = await daemon({ idle_timeout: '1h' });
    const before = plain.connections;
    const s = await client(d.ports.smtp!, '192.0.2.7');
    await transaction(s, ['a1@corp.example', 'a2@corp.example']);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<dropped@corp.example>', '250');
    await s.cmd('RSET', '250');
    await transaction(s, ['b@corp.example']);
    s.close();
    const s2 = await client(d.ports.smtp!, '192.0.2.8');
    await transaction(s2, ['c@corp.example']);
    s2.close();
    assert.deepEqual(plain.messages.slice(-3).map((m) => m.to), [['a1@corp.example', 'a2@corp.example'], ['b@corp.example'], ['c@corp.example']]);
    assert.equal(plain.connections - before, 1, 'one backend connection for everything');
    const sessions = await waitFor(() => d.logs.filter((l) => l.evt === 'proxy.session').map((l) => l.reused), (r) => r.length >= 4);
    assert.deepEqual(sessions, [false, true, true, true]);
  });

  it('outbound.reuse.max_messages caps the transactions per backend connection; idle_timeout closes it', { timeout: 30_000 }, async () => {
    const d = await daemon({ max_messages: 2, idle_timeout: '300ms' });
    const before = plain.connections;
    // The first daemon still keeps its own idle connection to this backend.
    const othersOpen = plain.active;
    const s = await client(d.ports.smtp!, '192.0.2.9');
    for (let i = 0; i < 3; i++) await transaction(s, [`m${i}@corp.example`]);
    assert.equal(plain.connections - before, 2, '2 + 1 transactions');
    s.close();
    assert.equal(await waitFor(() => plain.active, (n) => n === othersOpen), othersOpen, 'the idle backend connection was closed');
  });

  it('a backend that took XCLIENT keeps a connection per original client', { timeout: 30_000 }, async () => {
    const d = await daemon({ idle_timeout: '1h' });
    const before = xc.connections;
    const a = await client(d.ports.smtp!, '192.0.2.10');
    await transaction(a, ['x1@xc.example']);
    await transaction(a, ['x2@xc.example']);
    a.close();
    const b = await client(d.ports.smtp!, '192.0.2.11');
    await transaction(b, ['x3@xc.example']);
    b.close();
    assert.deepEqual(xc.messages.slice(-3).map((m) => [m.to[0], m.addr]), [['x1@xc.example', '192.0.2.10'], ['x2@xc.example', '192.0.2.10'], ['x3@xc.example', '192.0.2.11']]);
    assert.equal(xc.connections - before, 2, "the first client's two transactions over one connection, the second client on its own");
    // The first client comes back: its connection was kept idle while the second one was served.
    const again = await client(d.ports.smtp!, '192.0.2.10');
    await transaction(again, ['x4@xc.example']);
    again.close();
    assert.deepEqual(xc.messages.at(-1)!.addr, '192.0.2.10');
    assert.equal(xc.connections - before, 2, "the first client's connection is reused, not closed by the second client's mail");
  });

  it('forward_client: xforward names each transaction\'s client, and the connection serves every client', { timeout: 30_000 }, async () => {
    const d = await daemon({ idle_timeout: '1h' });
    const before = xf.connections;
    for (const from of ['192.0.2.20', '192.0.2.21']) {
      const s = await client(d.ports.smtp!, from);
      await transaction(s, [`${from}@xf.example`]);
      s.close();
    }
    assert.deepEqual(xf.messages.map((m) => m.addr), ['192.0.2.20', '192.0.2.21']);
    assert.equal(xf.connections - before, 1);
  });
});
