// XCLIENT hands the session to the client it names as if that client had just connected
// (Postfix's XCLIENT_README: "as if the client connected"; Haraka runs its connect hooks again):
// the connection limits and the `connect` stage judge that client, so a DNSBL checked at
// connect, or relay-acl's networks, see it rather than the proxy in front of it. A refusal
// replaces XCLIENT's 220 and closes the connection. And STARTTLS (RFC 3207 §4.2) takes plugins'
// connection notes back to what the `connect` stage left: what HELO and later taught them came
// from the client before TLS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { execFile } from 'node:child_process';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness } from '../helpers/fakes.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { greeted, TRUSTED_PEER, withPlugins, XCLIENT_TRUSTED } from '../helpers/xclient-listener.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createResolver } from '../../src/dns/resolver.js';

// The proxy (trusted for XCLIENT, in no relay network).
const PROXY = TRUSTED_PEER;
const proxyGreeted = (port: number) => greeted(port, PROXY, 'proxy.example');

/** The server closes the connection without another reply. */
async function closedAfter(s: SmtpTranscript): Promise<void> {
  assert.equal(await s.reply(), null, 'the connection closes');
}

test('dnsbl at connect: a client XCLIENT names that is listed gets 554 in place of the greeting, and the connection closes; one not listed is greeted and sends', async () => {
  const dns = await startDnsServer({ records: { '6.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
  const store = createMemoryStore();
  const h = await withPlugins([{ dnsbl: { zones: ['bl.test'], stage: 'connect' } }], { store, dns: createResolver({ servers: [dns.server], timeout: 1000, tries: 1 }) });
  try {
    const listed = await proxyGreeted(h.ports.smtp!);
    // The refusal is XCLIENT's reply: no 220 before it.
    const refusal = await listed.cmd('XCLIENT ADDR=127.0.0.6 NAME=listed.example', '554 5.7.1');
    assert.match(refusal, /127\.0\.0\.6.*bl\.test/);
    await closedAfter(listed);

    const clean = await proxyGreeted(h.ports.smtp!);
    await clean.cmd('XCLIENT ADDR=127.0.0.7 NAME=clean.example', '220 ');
    await clean.cmd('EHLO proxy.example', '250');
    await clean.cmd('MAIL FROM:<a@sender.example>', '250');
    await clean.cmd('RCPT TO:<alice@example.test>', '250 2.1.5');
    await clean.cmd('DATA', '354');
    await clean.cmd('Subject: hi\r\n\r\nhello\r\n.', '250 2.0.0');
    clean.close();
    assert.equal(h.queue.accepted.length, 1);
    assert.equal(h.queue.accepted[0]!.envelope.source.remoteAddress, '127.0.0.7');
    // The proxy's address was looked up at its own connect, each named client at XCLIENT.
    assert.deepEqual(
      dns.queries.map((q) => q.name),
      ['2.0.0.127.bl.test', '6.0.0.127.bl.test', '7.0.0.127.bl.test'],
    );
  } finally {
    await h.close();
    await store.close();
    await dns.stop();
  }
});

/** swaks (a real client that speaks XCLIENT) from the proxy's address; its exit and transcript. */
function swaks(port: number, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile('swaks', ['--server', '127.0.0.1', '--port', String(port), '--local-interface', PROXY, '--from', 'a@sender.example', '--to', 'alice@example.test', ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new Error('swaks is required (apt-get install -y swaks); .ci/run installs it'));
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, out: stdout + stderr });
    });
  });
}

test('swaks: --xclient-addr naming a listed client is refused at XCLIENT; one not listed delivers', async () => {
  const dns = await startDnsServer({ records: { '6.0.0.127.bl.test': { A: ['127.0.0.2'] } } });
  const store = createMemoryStore();
  const h = await withPlugins([{ dnsbl: { zones: ['bl.test'], stage: 'connect' } }], { store, dns: createResolver({ servers: [dns.server], timeout: 1000, tries: 1 }) });
  try {
    const listed = await swaks(h.ports.smtp!, ['--xclient-addr', '127.0.0.6']);
    assert.notEqual(listed.code, 0, listed.out);
    assert.match(listed.out, /<\*\* +554 5\.7\.1 .*bl\.test/);
    assert.doesNotMatch(listed.out, /MAIL FROM/, 'no transaction after the refusal');
    const clean = await swaks(h.ports.smtp!, ['--xclient-addr', '127.0.0.7']);
    assert.equal(clean.code, 0, clean.out);
    assert.match(clean.out, /<[-~] +250 2\.0\.0 /);
    assert.equal(h.queue.accepted.length, 1);
    assert.equal(h.queue.accepted[0]!.envelope.source.remoteAddress, '127.0.0.7');
  } finally {
    await h.close();
    await store.close();
    await dns.stop();
  }
});

test('relay-acl: a client XCLIENT names in the plugin\'s own networks may relay; the proxy itself may not', async () => {
  const store = createMemoryStore();
  const h = await withPlugins([{ 'relay-acl': { networks: ['127.0.0.8/32'] } }], { store });
  try {
    const s = await proxyGreeted(h.ports.smtp!);
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    await s.cmd('RSET', '250');
    await s.cmd('XCLIENT ADDR=127.0.0.8', '220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    s.close();
  } finally {
    await h.close();
    await store.close();
  }
});

test('XCLIENT naming a client over its per-address limit gets 421 and the connection closes; a connect stage that fails gives 421 too', async () => {
  const h = await startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED }, smtp: { max_connections_per_ip: 1 } } });
  // Who each connect stage judged, at the time (the session object lives on and changes).
  const judged: string[] = [];
  h.pipeline.hooks.connect = (i) => {
    judged.push(i.session.remoteAddress);
    return i.session.remoteAddress === '127.0.0.10' ? { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' } : { kind: 'next' };
  };
  try {
    const direct = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.9' });
    await direct.expect('220 ');
    const proxied = await proxyGreeted(h.ports.smtp!);
    await proxied.cmd('XCLIENT ADDR=127.0.0.9', '421 4.7.0');
    await closedAfter(proxied);
    direct.close();

    const failing = await proxyGreeted(h.ports.smtp!);
    await failing.cmd('XCLIENT ADDR=127.0.0.10', '421 4.3.0');
    await closedAfter(failing);
    // 127.0.0.9 over its limit was refused before any stage ran.
    assert.deepEqual(judged, ['127.0.0.9', PROXY, PROXY, '127.0.0.10']);
  } finally {
    await h.close();
  }
});

test('a handover adds no connection: XCLIENT is greeted while the total is over its limit with refused newcomers', async () => {
  const h = await startHarness({ config: { listen: { smtp: XCLIENT_TRUSTED }, smtp: { max_connections: 2 } } });
  try {
    const proxied = await proxyGreeted(h.ports.smtp!);
    const direct = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.31' });
    await direct.expect('220 ');
    // Refused, and counted until it has gone.
    const newcomer = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.33' });
    await newcomer.expect('421 ');
    await proxied.cmd('XCLIENT ADDR=127.0.0.32', '220 ');
    await proxied.cmd('EHLO proxy.example', '250');
    proxied.close();
    direct.close();
    newcomer.close();
  } finally {
    await h.close();
  }
});

test('STARTTLS takes plugins\' connection notes back to what the connect stage left', async () => {
  const h = await startHarness({ config: { listen: { smtp: { host: '127.0.0.1', port: 0 } } } });
  const seenAtMail: Record<string, unknown>[] = [];
  h.pipeline.hooks.connect = (i) => {
    i.notes.set('probe', { address: i.session.remoteAddress });
    return { kind: 'next' };
  };
  h.pipeline.hooks.helo = (i) => {
    const notes = i.notes.get('probe')!;
    // The first greeting the plugin heard on this connection, as a plugin keeping state would.
    notes.firstHelo ??= i.session.helo;
    notes.greetings = ((notes.greetings as number | undefined) ?? 0) + 1;
    return { kind: 'next' };
  };
  h.pipeline.hooks.mail = (i) => {
    seenAtMail.push({ ...i.notes.get('probe') });
    return { kind: 'next' };
  };
  try {
    const plain = await openSmtp(h.ports.smtp!);
    await plain.expect('220 ');
    await plain.cmd('EHLO before-tls.example', '250');
    await plain.cmd('MAIL FROM:<a@sender.example>', '250');
    await plain.cmd('RSET', '250');
    await plain.cmd('STARTTLS', '220');
    const sock = tlsConnect({ socket: plain.sock, rejectUnauthorized: false });
    await new Promise((r) => sock.once('secureConnect', r));
    const s = new SmtpTranscript(sock);
    await s.cmd('EHLO after-tls.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    s.close();
    assert.equal(seenAtMail.length, 2);
    assert.equal(seenAtMail[0]!.address, '127.0.0.1');
    assert.equal(seenAtMail[0]!.greetings, 1);
    assert.equal(seenAtMail[1]!.address, '127.0.0.1', 'what the connect stage noted stays');
    assert.equal(seenAtMail[1]!.greetings, 1, 'the greeting before TLS is forgotten');
    assert.equal(seenAtMail[0]!.firstHelo, 'before-tls.example');
    assert.equal(seenAtMail[1]!.firstHelo, 'after-tls.example');
  } finally {
    await h.close();
  }
});
