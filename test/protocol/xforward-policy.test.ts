// XFORWARD's client describes the message; the peer decides policy (Postfix XFORWARD_README:
// the attributes are for logging, Received and content filters). A trusted content filter that
// hands mail back naming its original client keeps the peer's address for every policy the real
// plugins apply (relay-acl's access lists, the AUTH throttle, DNSBL) and for ETRN; the plugins
// see that client in `session.forwarded` for one transaction; Received and the transaction line
// name it; a next hop gets the peer with XCLIENT and the original client with XFORWARD.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { SMTPServer } from 'smtp-server';
import { SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness } from '../helpers/fakes.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { greeted, TRUSTED_PEER, withPlugins, XCLIENT_TRUSTED } from '../helpers/xclient-listener.js';
import { createLogger } from '../../src/log/logger.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createResolver } from '../../src/dns/resolver.js';
import { accessId, classify, RECIPIENT_ACCESS_KEY, SENDER_ACCESS_KEY } from '../../src/policy/access.js';
import type { SessionInfo, Stage } from '../../src/pipeline/plugin.js';
import type { Store } from '../../src/store/store.js';

const MSG = 'Subject: hi\r\n\r\nhello\r\n.';
// The content filter (trusted for XCLIENT/XFORWARD, in no relay network).
const PEER = TRUSTED_PEER;

async function denyCidr(store: Store, key: string, cidr: string): Promise<void> {
  const c = classify(cidr);
  const id = accessId(c.match, c.value);
  await store.hset(key, id, JSON.stringify({ id, ...c, action: 'deny' }));
}


test('relay-acl: CIDR access entries match the peer, not the client XFORWARD names; a direct connection from that client is refused', async () => {
  const store = createMemoryStore();
  await denyCidr(store, RECIPIENT_ACCESS_KEY, '127.0.0.3/32');
  await denyCidr(store, SENDER_ACCESS_KEY, '127.0.0.4/32');
  const h = await withPlugins(['relay-acl'], { store });
  try {
    const filter = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await filter.cmd('XFORWARD ADDR=127.0.0.3 NAME=denied.example HELO=denied.example', '250');
    await filter.cmd('MAIL FROM:<a@sender.example>', '250');
    await filter.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await filter.cmd('DATA', '354');
    await filter.cmd(MSG, '250 2.0.0');
    await filter.cmd('XFORWARD ADDR=127.0.0.4', '250');
    await filter.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
    filter.close();

    const recipientDenied = await greeted(h.ports.smtp!, '127.0.0.3', 'client.example');
    await recipientDenied.cmd('MAIL FROM:<a@sender.example>', '250');
    await recipientDenied.cmd('RCPT TO:<alice@example.test>', '550 5.7.1');
    recipientDenied.close();
    const senderDenied = await greeted(h.ports.smtp!, '127.0.0.4', 'client.example');
    await senderDenied.cmd('MAIL FROM:<a@sender.example>', '550 5.7.1');
    senderDenied.close();
  } finally {
    await h.close();
    await store.close();
  }
});

test('the AUTH throttle counts failures against the peer, not against the client XFORWARD names', async () => {
  const store = createMemoryStore();
  const h = await withPlugins([{ auth: { delay: '1ms', max_delay: '1ms' } }], { store });
  try {
    const plain = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await plain.cmd('STARTTLS', '220');
    const sock = tlsConnect({ socket: plain.sock, rejectUnauthorized: false });
    await new Promise((r) => sock.once('secureConnect', r));
    const s = new SmtpTranscript(sock);
    await s.cmd('EHLO filter.example', '250');
    await s.cmd('XFORWARD ADDR=198.51.100.9', '250');
    await s.cmd(`AUTH PLAIN ${Buffer.from('\0alice@example.test\0wrong').toString('base64')}`, '535 5.7.8');
    s.close();
    assert.equal(await store.get(`auth:fail:ip:${PEER}`), '1');
    assert.equal(await store.get('auth:fail:ip:198.51.100.9'), null);
  } finally {
    await h.close();
    await store.close();
  }
});

test('dnsbl looks up the peer, not the client XFORWARD names; a direct connection from that client is refused', async () => {
  const dns = await startDnsServer({ records: { '6.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
  const store = createMemoryStore();
  const h = await withPlugins([{ dnsbl: { zones: ['bl.test'], stage: 'rcpt' } }], { store, dns: createResolver({ servers: [dns.server], timeout: 1000, tries: 1 }) });
  try {
    const filter = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await filter.cmd('XFORWARD ADDR=127.0.0.6 NAME=listed.example', '250');
    await filter.cmd('MAIL FROM:<a@sender.example>', '250');
    await filter.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    filter.close();
    assert.deepEqual(
      dns.queries.map((q) => q.name),
      ['2.0.0.127.bl.test'],
    );
    const listed = await greeted(h.ports.smtp!, '127.0.0.6', 'client.example');
    await listed.cmd('MAIL FROM:<a@sender.example>', '250');
    await listed.cmd('RCPT TO:<alice@example.test>', '554 5.7.1');
    listed.close();
  } finally {
    await h.close();
    await store.close();
    await dns.stop();
  }
});

test('plugins see the peer as the session\'s client and XFORWARD\'s in session.forwarded, for its transaction only; Received and the transaction line name it', async () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const h = await startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED } }, log: createLogger('info', sink) });
  // Each stage's view of the session as it was then (the session object lives on).
  const seen: { stage: Stage; session: SessionInfo }[] = [];
  for (const stage of ['mail', 'rcpt', 'data'] as const) {
    h.pipeline.hooks[stage] = (i) => {
      seen.push({ stage, session: structuredClone(i.session) });
      return { kind: 'next' };
    };
  }
  try {
    const s = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=Outside.Example PORT=4025 HELO=outside-helo.example PROTO=ESMTP SOURCE=REMOTE IDENT=ABC123', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    await s.cmd('XFORWARD ADDR=198.51.100.10 HELO=[UNAVAILABLE]', '250');
    await s.cmd('RSET', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    s.close();

    const forwarded = { address: '198.51.100.9', port: 4025, hostname: 'outside.example', helo: 'outside-helo.example', protocol: 'ESMTP', source: 'REMOTE', ident: 'ABC123' };
    const during = seen.slice(0, 3);
    assert.deepEqual(during.map((x) => x.stage), ['mail', 'rcpt', 'data']);
    for (const { session } of during) {
      assert.equal(session.remoteAddress, PEER);
      assert.equal(session.helo, 'filter.example');
      assert.equal(session.clientHostname, undefined);
      assert.deepEqual(session.forwarded, forwarded);
    }
    const after = seen.slice(3);
    assert.deepEqual(after.map((x) => x.stage), ['mail', 'rcpt'], 'RSET ended the second XFORWARD');
    for (const { session } of after) {
      assert.equal(session.remoteAddress, PEER);
      assert.equal(session.forwarded, undefined);
    }

    const m = h.queue.accepted[0]!;
    assert.equal(m.envelope.source.remoteAddress, PEER);
    assert.deepEqual(m.envelope.source.forwarded, forwarded);
    assert.match(m.message.toString('latin1'), /^Received: from outside-helo\.example \(outside\.example \[198\.51\.100\.9\]\)/);
    const tx = lines.find((l) => l.evt === 'smtp.transaction')!;
    assert.deepEqual(tx.client, { ip: '198.51.100.9', helo: 'outside-helo.example', hostname: 'outside.example' });
    assert.equal(tx.peer, PEER);
    assert.equal(tx.remote, '198.51.100.9');
    const events = lines.filter((l) => l.evt === 'smtp.xclient');
    assert.equal(events[0]!.client, '198.51.100.9');
    assert.equal(events[0]!.peer, PEER);
    assert.equal(events[0]!.ident, 'ABC123');
  } finally {
    await h.close();
  }
});

test('XFORWARD naming a client without its address: unknown stays unknown (never the peer\'s HELO); Received names the peer', async () => {
  const h = await startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED } } });
  let session: SessionInfo | undefined;
  h.pipeline.hooks.rcpt = (i) => {
    session = structuredClone(i.session);
    return { kind: 'next' };
  };
  try {
    const s = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await s.cmd('XFORWARD NAME=outside.example ADDR=[UNAVAILABLE]', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    assert.deepEqual(session!.forwarded, { hostname: 'outside.example' });
    assert.equal(session!.remoteAddress, PEER);
    assert.match(h.queue.accepted[0]!.message.toString('latin1'), /^Received: from filter\.example \(\S*\s*\[127\.0\.0\.2\]\)/);
  } finally {
    await h.close();
  }
});

test('XFORWARD HELO=[UNAVAILABLE]: the peer\'s greeting stays in effect (MAIL is accepted), the origin\'s HELO is unknown', async () => {
  const h = await startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED } } });
  let session: SessionInfo | undefined;
  h.pipeline.hooks.mail = (i) => {
    session = structuredClone(i.session);
    return { kind: 'next' };
  };
  try {
    const s = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=outside.example HELO=[UNAVAILABLE]', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    assert.deepEqual(session!.forwarded, { address: '198.51.100.9', hostname: 'outside.example' });
    assert.equal(session!.helo, 'filter.example');
    assert.match(h.queue.accepted[0]!.message.toString('latin1'), /^Received: from \[198\.51\.100\.9\] \(outside\.example \[198\.51\.100\.9\]\)/);
  } finally {
    await h.close();
  }
});

test('ETRN is allowed by the peer\'s address, never by one XFORWARD names; XCLIENT\'s does count', async () => {
  const h = await startHarness({ config: { relay: { networks: ['192.0.2.0/24'] }, listen: { smtp: XCLIENT_TRUSTED } }, etrn: { runQueue: async () => 0 } });
  try {
    const s = await greeted(h.ports.smtp!, PEER, 'filter.example');
    await s.cmd('XFORWARD ADDR=192.0.2.7', '250');
    await s.cmd('ETRN foreign.example', '554 5.7.1');
    await s.cmd('XCLIENT ADDR=192.0.2.7', '220 ');
    await s.cmd('EHLO filter.example', '250');
    await s.cmd('ETRN foreign.example', '251 ');
    s.close();
  } finally {
    await h.close();
  }
});

interface Backend {
  port: number;
  /** At each MAIL: the attributes XCLIENT and XFORWARD gave the backend session. */
  mails: { xclient: Record<string, unknown>; xforward: Record<string, unknown> }[];
  stop(): Promise<void>;
}

/** A backend that offers XCLIENT and XFORWARD to us and records what it was told. */
async function startBackend(): Promise<Backend> {
  const b: Backend = { port: 0, mails: [], stop: async () => undefined };
  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    useXClient: ['127.0.0.1'],
    useXForward: ['127.0.0.1'],
    onMailFrom(_a, session, cb) {
      const s = session as typeof session & { xClient: Map<string, unknown>; xForward: Map<string, unknown> };
      b.mails.push({ xclient: Object.fromEntries(s.xClient), xforward: Object.fromEntries(s.xForward) });
      cb();
    },
    onData(stream, _s, cb) {
      stream.resume();
      stream.on('end', () => cb(null, '2.0.0 Ok'));
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  b.port = (server.server.address() as { port: number }).port;
  b.stop = () => new Promise<void>((res) => server.close(() => res()));
  return b;
}

test('in-line proxy: the next hop gets the peer as XCLIENT ADDR, and the client XFORWARD named only with XFORWARD', async () => {
  const backend = await startBackend();
  const nexthop = `smtp://127.0.0.1:${backend.port}`;
  const h = await startHarness({
    config: {
      listen: { smtp: XCLIENT_TRUSTED },
      routes: { 'x.example': { nexthop, mode: 'proxy', forward_client: 'xclient' }, 'f.example': { nexthop, mode: 'proxy', forward_client: 'xforward' } },
    },
  });
  try {
    const s = await greeted(h.ports.smtp!, PEER, 'filter.example');
    for (const domain of ['x.example', 'f.example']) {
      await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=outside.example HELO=outside-helo.example IDENT=ABC123', '250');
      await s.cmd('MAIL FROM:<a@sender.example>', '250');
      await s.cmd(`RCPT TO:<u@${domain}>`, '250');
      await s.cmd('DATA', '354');
      await s.cmd(MSG, '250');
    }
    s.close();
    const [viaXclient, viaXforward] = backend.mails;
    assert.equal(viaXclient!.xclient.ADDR, PEER);
    assert.equal(viaXclient!.xclient.HELO, 'filter.example');
    assert.notEqual(viaXclient!.xclient.NAME, 'outside.example');
    assert.deepEqual(viaXclient!.xforward, {});
    assert.deepEqual(viaXforward!.xclient, {});
    assert.equal(viaXforward!.xforward.ADDR, '198.51.100.9');
    assert.equal(viaXforward!.xforward.NAME, 'outside.example');
    assert.equal(viaXforward!.xforward.HELO, 'outside-helo.example');
    assert.equal(viaXforward!.xforward.IDENT, 'ABC123');
  } finally {
    await h.close();
    await backend.stop();
  }
});
