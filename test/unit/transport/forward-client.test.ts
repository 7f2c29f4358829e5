// The original client on queued mail (`routes.<d>.forward_client`, forward-client.ts): the
// XCLIENT/XFORWARD lines themselves (offered attributes only, [UNAVAILABLE] for unknown values,
// IPV6: prefix, xtext, 512-octet split with ADDR last), the config key, and delivery through
// Outbound to scripted next hops: one that takes XCLIENT sees each message's own client (and a
// connection speaks for one client only), one without it still gets the mail, one that refuses
// XCLIENT for good gets it as from us, one that refuses it for now defers it.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SMTPServer } from 'smtp-server';
import { addrValue, chooseCommand, clientFromSource, forwardCommands, routeForwardMode, type ForwardedClient } from '../../../src/transport/forward-client.js';
import { createResolver } from '../../../src/dns/resolver.js';
import { Outbound } from '../../../src/transport/outbound.js';
import { fromObject } from '../../../src/config/load.js';
import type { RemoteVia } from '../../../src/delivery/router.js';
import { silentLogger } from '../../../src/log/logger.js';
import { startSink, type RunningSink } from '../../helpers/smtp-sink.js';
import { startScriptedHop } from '../../helpers/scripted-hop.js';

const ALL_XCLIENT = new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN']);
const ALL_XFORWARD = new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'IDENT', 'SOURCE']);

describe('XCLIENT / XFORWARD command lines', () => {
  const client: ForwardedClient = { addr: '192.0.2.7', port: 40000, name: 'mail.client.example', helo: 'client.example', login: 'al ice', proto: 'ESMTP', source: 'REMOTE', ident: 'Q1' };

  it('XCLIENT: every offered attribute, ADDR last, values xtext-encoded', () => {
    assert.deepEqual(forwardCommands('XCLIENT', ALL_XCLIENT, client), ['XCLIENT NAME=mail.client.example HELO=client.example LOGIN=al+20ice PORT=40000 PROTO=ESMTP ADDR=192.0.2.7']);
  });

  it('only the attributes the server offers; unknown values are [UNAVAILABLE]', () => {
    assert.deepEqual(forwardCommands('XCLIENT', new Set(['ADDR', 'NAME', 'LOGIN']), { addr: '192.0.2.7', proto: 'SMTP', source: 'REMOTE' }), ['XCLIENT NAME=[UNAVAILABLE] LOGIN=[UNAVAILABLE] ADDR=192.0.2.7']);
    assert.deepEqual(forwardCommands('XCLIENT', new Set(['FOO']), client), []);
  });

  it('XFORWARD carries IDENT and SOURCE', () => {
    assert.deepEqual(forwardCommands('XFORWARD', ALL_XFORWARD, client), ['XFORWARD NAME=mail.client.example HELO=client.example IDENT=Q1 SOURCE=REMOTE PORT=40000 PROTO=ESMTP ADDR=192.0.2.7']);
  });

  it('a command longer than 512 octets is split, ADDR in the last one', () => {
    const long = { ...client, name: `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(60)}`, helo: `${'e'.repeat(63)}.${'f'.repeat(63)}.${'g'.repeat(63)}.${'h'.repeat(60)}` };
    const lines = forwardCommands('XCLIENT', ALL_XCLIENT, long);
    assert.equal(lines.length, 2);
    assert.ok(lines.every((l) => l.length <= 510 && l.startsWith('XCLIENT ')));
    assert.match(lines[1]!, /ADDR=192\.0\.2\.7$/);
    assert.ok(!lines[0]!.includes('ADDR='));
  });

  it('ADDR: IPv4, IPv4-mapped IPv6 as IPv4, IPv6 with IPV6:, anything else [UNAVAILABLE]', () => {
    const cases: [string | undefined, string][] = [
      ['192.0.2.1', '192.0.2.1'],
      ['::ffff:192.0.2.1', '192.0.2.1'],
      ['2001:db8::1', 'IPV6:2001:db8::1'],
      ['not-an-ip', '[UNAVAILABLE]'],
      [undefined, '[UNAVAILABLE]'],
    ];
    for (const [ip, want] of cases) assert.equal(addrValue(ip), want, String(ip));
  });

  it('which command: by mode and offer', () => {
    const both = { xclient: 'ADDR', xforward: 'ADDR' };
    assert.equal(chooseCommand('xclient', both), 'XCLIENT');
    assert.equal(chooseCommand('xforward', both), 'XFORWARD');
    assert.equal(chooseCommand('auto', both), 'XCLIENT');
    assert.equal(chooseCommand('auto', { xforward: 'ADDR' }), 'XFORWARD');
    assert.equal(chooseCommand('xclient', { xforward: 'ADDR' }), null);
    assert.equal(chooseCommand('none', both), null);
  });

  it('the client of a spooled message; local submissions have no address and SOURCE=LOCAL', () => {
    assert.deepEqual(clientFromSource({ listener: 'smtp', remoteAddress: '192.0.2.7', remotePort: 5000, helo: 'h.example', protocol: 'ESMTPS' }, 'Q9'), { addr: '192.0.2.7', port: 5000, helo: 'h.example', proto: 'ESMTP', source: 'REMOTE', ident: 'Q9' });
    assert.deepEqual(clientFromSource({ listener: 'local', remoteAddress: '127.0.0.1', protocol: 'local', authUser: 'root' }), { login: 'root', proto: 'ESMTP', source: 'LOCAL' });
    assert.equal(clientFromSource({ listener: 'smtp', remoteAddress: '192.0.2.7', protocol: 'SMTP' }).proto, 'SMTP');
  });

  // A content filter (127.0.0.2) handed the message back naming its original client with XFORWARD.
  const filtered = { listener: 'smtp', remoteAddress: '127.0.0.2', remotePort: 6000, helo: 'filter.example', protocol: 'ESMTP' };

  it('mail a content filter handed back: XCLIENT names the filter, which holds the standing; XFORWARD the client it named', () => {
    const c = clientFromSource({ ...filtered, forwarded: { address: '198.51.100.9', port: 4025, hostname: 'outside.example', helo: 'outside-helo.example', protocol: 'SMTP', source: 'REMOTE', ident: 'ABC' } }, 'Q9');
    assert.deepEqual(forwardCommands('XCLIENT', ALL_XCLIENT, c), ['XCLIENT NAME=[UNAVAILABLE] HELO=filter.example LOGIN=[UNAVAILABLE] PORT=6000 PROTO=ESMTP ADDR=127.0.0.2']);
    assert.deepEqual(forwardCommands('XFORWARD', ALL_XFORWARD, c), ['XFORWARD NAME=outside.example HELO=outside-helo.example IDENT=ABC SOURCE=REMOTE PORT=4025 PROTO=SMTP ADDR=198.51.100.9']);
  });

  it('XFORWARD of a client named without some attributes: those stay unknown, never the filter\'s; IDENT and SOURCE alone name no client', () => {
    const partial = clientFromSource({ ...filtered, forwarded: { hostname: 'outside.example', source: 'LOCAL' } }, 'Q9');
    assert.deepEqual(forwardCommands('XFORWARD', ALL_XFORWARD, partial), ['XFORWARD NAME=outside.example HELO=[UNAVAILABLE] IDENT=Q9 SOURCE=LOCAL PORT=[UNAVAILABLE] PROTO=[UNAVAILABLE] ADDR=[UNAVAILABLE]']);
    const identOnly = clientFromSource({ ...filtered, forwarded: { ident: 'ABC' } }, 'Q9');
    assert.deepEqual(forwardCommands('XFORWARD', ALL_XFORWARD, identOnly), ['XFORWARD NAME=[UNAVAILABLE] HELO=filter.example IDENT=ABC SOURCE=REMOTE PORT=6000 PROTO=ESMTP ADDR=127.0.0.2']);
  });
});

describe('routes.<d>.forward_client (config)', () => {
  const load = (route: unknown) => fromObject({ hostname: 'mx.example.test', data_dir: '/nonexistent', routes: { 'corp.example': route } }, null).routes['corp.example']!;

  it('defaults: xclient for proxy routes, none for queue routes and the short form', () => {
    assert.equal(routeForwardMode(load({ nexthop: 'smtp://10.0.0.5:25', mode: 'proxy' })), 'xclient');
    assert.equal(routeForwardMode(load({ nexthop: 'smtp://10.0.0.5:25' })), 'none');
    assert.equal(routeForwardMode(load('smtp://10.0.0.5:25')), 'none');
    assert.equal(routeForwardMode(load({ nexthop: 'smtp://10.0.0.5:25', forward_client: 'xforward' })), 'xforward');
    assert.equal(routeForwardMode(load({ nexthop: 'smtp://10.0.0.5:25', mode: 'proxy', forward_client: 'none' })), 'none');
  });

  it('an unknown value is an error naming the key and the choices', () => {
    assert.throws(() => load({ nexthop: 'smtp://10.0.0.5:25', forward_client: 'yes' }), /routes\."?corp\.example"?\.forward_client: expected one of "none", "xclient", "xforward", "auto", received "yes"/);
  });
});

describe('queued mail with forward_client: xclient, delivered by Outbound', () => {
  const stops: (() => Promise<void>)[] = [];
  const outbounds: Outbound[] = [];
  after(async () => {
    for (const o of outbounds) o.close();
    for (const s of stops) await s();
  });

  const outbound = (port: number, reuse: Record<string, unknown> = { idle_timeout: '1h' }) => {
    const config = fromObject(
      { hostname: 'mx.example.test', data_dir: '/nonexistent', outbound: { tls: 'none', reuse }, routes: { 'corp.example': { nexthop: `smtp://127.0.0.1:${port}`, forward_client: 'xclient' } } },
      null,
    );
    const ob = new Outbound({ config, dns: createResolver(config.dns), log: silentLogger(), client: { connectTimeoutMs: 2000 } });
    outbounds.push(ob);
    // As the router builds it: the route's settings spread into `via`.
    vias.set(ob, { type: 'route', nexthop: `smtp://127.0.0.1:${port}`, mode: 'queue', verify: 'none', match: 'corp.example', forward_client: 'xclient' });
    return ob;
  };
  const vias = new Map<Outbound, RemoteVia>();
  const send = (ob: Outbound, i: number, client: ForwardedClient) =>
    ob.deliver('corp.example', vias.get(ob)!, { mailFrom: 'a@example.test', recipients: [{ address: `r${i}@corp.example` }], message: Buffer.from(`Subject: m${i}\r\n\r\nbody\r\n`), client });

  const clientA: ForwardedClient = { addr: '192.0.2.7', helo: 'a.client.example', proto: 'ESMTP', source: 'REMOTE' };
  const clientB: ForwardedClient = { addr: '192.0.2.8', helo: 'b.client.example', login: 'bob', proto: 'ESMTP', source: 'REMOTE' };

  it('a next hop that takes XCLIENT sees each message from its own client; one connection per client', async () => {
    const seen: { to: string; addr: string; helo: string; login: string; conn: string }[] = [];
    let connections = 0;
    const server = new SMTPServer({
      logger: false,
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      useXClient: ['127.0.0.1'],
      onConnect(_s, cb) {
        connections++;
        cb();
      },
      onData(stream, session, cb) {
        stream.resume();
        stream.on('end', () => {
          seen.push({ to: session.envelope.rcptTo[0]!.address, addr: session.remoteAddress, helo: session.hostNameAppearsAs, login: String(session.xClient.get('LOGIN') || ''), conn: session.id });
          cb();
        });
      },
    });
    server.on('error', () => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    stops.push(() => new Promise((r) => server.close(() => r())));
    const port = (server.server.address() as { port: number }).port;
    const ob = outbound(port);
    const r0 = await send(ob, 0, clientA);
    const r1 = await send(ob, 1, clientA);
    const r2 = await send(ob, 2, clientB);
    for (const [i, r] of [r0, r1, r2].entries()) assert.equal(r.get(`r${i}@corp.example`)!.status, 'sent', `message ${i}`);
    assert.deepEqual(
      seen.map(({ to, addr, helo, login }) => ({ to, addr, helo, login })),
      [
        { to: 'r0@corp.example', addr: '192.0.2.7', helo: 'a.client.example', login: '' },
        { to: 'r1@corp.example', addr: '192.0.2.7', helo: 'a.client.example', login: '' },
        { to: 'r2@corp.example', addr: '192.0.2.8', helo: 'b.client.example', login: 'bob' },
      ],
    );
    assert.equal(seen[0]!.conn, seen[1]!.conn, "client A's two messages share a connection");
    assert.notEqual(seen[1]!.conn, seen[2]!.conn, 'client B gets its own (XCLIENT is not offered twice)');
    assert.equal(connections, 2);
  });

  it('a next hop without XCLIENT still gets the mail, as from us, over one reused connection', async () => {
    const sink: RunningSink = await startSink({}, 0, '127.0.0.1');
    stops.push(() => sink.stop());
    const ob = outbound(sink.port);
    assert.equal((await send(ob, 0, clientA)).get('r0@corp.example')!.status, 'sent');
    assert.equal((await send(ob, 1, clientB)).get('r1@corp.example')!.status, 'sent');
    assert.equal(sink.messages.length, 2);
    assert.equal(sink.connections, 1);
  });

  /** A raw next hop that offers XCLIENT and answers it with `xclientReply`; takes mail otherwise. */
  async function startRefusing(xclientReply: string): Promise<{ port: number; messages: number; commands: string[] }> {
    const hop = await startScriptedHop({ ehlo: ['XCLIENT NAME ADDR PROTO HELO', '8BITMIME'], answer: (line) => (/^XCLIENT /i.test(line) ? xclientReply : undefined) });
    stops.push(() => hop.stop());
    return {
      port: hop.port,
      get messages() {
        return hop.connections.reduce((n, c) => n + c.bodies.length, 0);
      },
      get commands() {
        return hop.connections.flatMap((c) => c.commands.map((l) => l.split(' ')[0]!.toUpperCase()));
      },
    };
  }

  it('XCLIENT refused for good (501): the mail goes as from us', async () => {
    const hop = await startRefusing('501 5.5.4 Bad ADDR syntax');
    const ob = outbound(hop.port);
    const r = await send(ob, 0, { ...clientA, addr: '2001:db8::7' });
    assert.equal(r.get('r0@corp.example')!.status, 'sent');
    assert.equal(hop.messages, 1);
    assert.deepEqual(hop.commands.slice(0, 4), ['EHLO', 'XCLIENT', 'MAIL', 'RCPT']);
  });

  it('XCLIENT refused for now (421/4yz): the recipients are deferred with 4.7.0, nothing sent', async () => {
    const hop = await startRefusing('451 4.3.0 Try again later');
    const ob = outbound(hop.port);
    const r = await send(ob, 0, clientA);
    const res = r.get('r0@corp.example')!;
    assert.equal(res.status, 'temp');
    assert.equal(res.enhanced, '4.7.0');
    assert.match(res.text, /next hop refused XCLIENT: 451 Try again later/);
    assert.equal(hop.messages, 0);
    assert.ok(!hop.commands.includes('MAIL'));
  });
});
