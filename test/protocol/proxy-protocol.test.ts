// PROXY protocol v1 and v2 on an SMTP listener (listen.smtp.proxy_protocol.trusted): the address
// in a header from a trusted peer is the client's for the relay policy, the plugins (DNSBL, rate
// limits read session.remoteAddress) and the Received header; a header from any other peer, or a
// malformed one, is refused. Peers are told apart by loopback source addresses (127.0.0.2 trusted,
// 127.0.0.3 not).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { openSmtp, SmtpTranscript } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

const TRUSTED_PEER = '127.0.0.2';
const OTHER_PEER = '127.0.0.3';
const MSG = 'Subject: hi\r\n\r\nhello\r\n.';

function harness(): Promise<Harness> {
  return startHarness({
    config: {
      // Only the forwarded client's network may relay: loopback itself may not.
      relay: { networks: ['192.0.2.0/24'] },
      listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: [`${TRUSTED_PEER}/32`] } } },
    },
  });
}

/** Connects from `from` and writes `header` at once, as a balancer does. */
async function viaProxy(h: Harness, from: string, header: Buffer): Promise<SmtpTranscript> {
  const s = await openSmtp(h.ports.smtp!, { localAddress: from });
  s.send(header);
  return s;
}

const hdr = (v: 1 | 2, client: string) => buildProxyHeader(v, { address: client, port: 40001 }, { address: '198.51.100.25', port: 25 });

for (const v of [1, 2] as const) {
  test(`v${v} header from a trusted peer: the forwarded client relays, its address is in the session and Received`, async () => {
    const h = await harness();
    try {
      const s = await viaProxy(h, TRUSTED_PEER, hdr(v, '192.0.2.7'));
      await s.expect('220 ');
      await s.cmd('EHLO client.example', '250');
      await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
      await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
      await s.cmd('DATA', '354');
      await s.cmd(MSG, '250 2.0.0');
      s.close();
      const connectStage = h.pipeline.calls.find((c) => c.stage === 'connect')!;
      assert.equal(connectStage.input.session.remoteAddress, '192.0.2.7');
      assert.equal(connectStage.input.session.remotePort, 40001);
      assert.equal(connectStage.input.session.relaying, true);
      assert.equal(h.queue.accepted[0]!.envelope.source.remoteAddress, '192.0.2.7');
      assert.match(h.queue.accepted[0]!.message.toString('latin1'), /^Received: from client\.example \(\[192\.0\.2\.7\]\)/);
    } finally {
      await h.close();
    }
  });

  test(`v${v} header naming a client outside relay.networks: relaying refused for that client`, async () => {
    const h = await harness();
    try {
      const s = await viaProxy(h, TRUSTED_PEER, hdr(v, '198.51.100.9'));
      await s.expect('220 ');
      await s.cmd('EHLO client.example', '250');
      await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
      await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1 Relay access denied');
      s.close();
      assert.equal(h.pipeline.calls.find((c) => c.stage === 'connect')!.input.session.remoteAddress, '198.51.100.9');
    } finally {
      await h.close();
    }
  });

  test(`v${v} header from an untrusted peer is refused with 554 5.7.1 and never believed`, async () => {
    const h = await harness();
    try {
      const s = await viaProxy(h, OTHER_PEER, hdr(v, '192.0.2.7'));
      // The header may race the greeting (no greeting delay here): refused either way.
      let first = await s.reply();
      if (first?.startsWith('220 ')) first = await s.reply();
      assert.match(first ?? '(closed)', /^554 5\.7\.1 /);
      assert.equal(await s.reply(), null, 'the connection is closed');
      assert.ok(!h.pipeline.calls.some((c) => c.input.session.remoteAddress === '192.0.2.7'));
    } finally {
      await h.close();
    }
  });

  test(`v${v} header from an untrusted peer after the greeting is refused too`, async () => {
    const h = await harness();
    try {
      const s = await openSmtp(h.ports.smtp!, { localAddress: OTHER_PEER });
      await s.expect('220 ');
      s.send(hdr(v, '192.0.2.7'));
      await s.expect('554 5.7.1 PROXY protocol header not accepted');
      assert.equal(await s.reply(), null);
    } finally {
      await h.close();
    }
  });
}

test('a trusted peer that sends no header, or a malformed one, gets 421 4.7.0 and no session', async () => {
  const h = await harness();
  try {
    const cases = [
      Buffer.from('EHLO client.example\r\n'),
      Buffer.from('PROXY TCP4 evil.example 198.51.100.25 1 25\r\n'),
      Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.25 1\r\n'),
      Buffer.concat([hdr(2, '192.0.2.7').subarray(0, 12), Buffer.from([0x31, 0x11, 0, 12]), Buffer.alloc(12)]),
    ];
    for (const c of cases) {
      const s = await viaProxy(h, TRUSTED_PEER, c);
      await s.expect('421 4.7.0 Invalid PROXY protocol header');
      assert.equal(await s.reply(), null);
    }
    assert.equal(h.pipeline.calls.length, 0, 'no session stage ran');
  } finally {
    await h.close();
  }
});

test('a trusted peer that waits for a greeting gets none until it sends the header (split across writes)', async () => {
  const h = await harness();
  try {
    const header = hdr(2, '192.0.2.7');
    const sock = connect({ host: '127.0.0.1', port: h.ports.smtp!, localAddress: TRUSTED_PEER });
    await new Promise<void>((res) => sock.once('connect', () => res()));
    const s = new SmtpTranscript(sock);
    sock.write(header.subarray(0, 5));
    await new Promise((r) => setTimeout(r, 50));
    sock.write(header.subarray(5, 15));
    await new Promise((r) => setTimeout(r, 50));
    sock.write(header.subarray(15));
    await s.expect('220 ');
    await s.cmd('EHLO client.example', '250');
    s.close();
    assert.equal(h.pipeline.calls[0]!.input.session.remoteAddress, '192.0.2.7');
  } finally {
    await h.close();
  }
});

test('v2 LOCAL (a balancer health check) keeps the peer address, which may not relay', async () => {
  const h = await harness();
  try {
    const local = Buffer.concat([hdr(2, '192.0.2.7').subarray(0, 12), Buffer.from([0x20, 0x00, 0, 0])]);
    const s = await viaProxy(h, TRUSTED_PEER, local);
    await s.expect('220 ');
    await s.cmd('EHLO lb.example', '250');
    await s.cmd('MAIL FROM:<>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    s.close();
    assert.equal(h.pipeline.calls[0]!.input.session.remoteAddress, TRUSTED_PEER);
  } finally {
    await h.close();
  }
});

test('the listener schema refuses a proxy_protocol without trusted peers or with a bad network', async () => {
  const { fromObject } = await import('../../src/config/load.js');
  assert.throws(() => fromObject({ listen: { smtp: { port: 0, proxy_protocol: {} } } }, null), /listen\.smtp\.proxy_protocol\.trusted/);
  assert.throws(() => fromObject({ listen: { smtp: { port: 0, proxy_protocol: { trusted: ['10.0.0.0/99'] } } } }, null), /expected an address or CIDR/);
  assert.throws(() => fromObject({ listen: { imap: { port: 0, proxy_protocol: { trusted: ['10.0.0.1'] } } } }, null), /proxy_protocol/);
});
