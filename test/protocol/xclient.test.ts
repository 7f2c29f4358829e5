// XCLIENT and XFORWARD inbound (Postfix extensions), only from listen.<name>.xclient.trusted
// peers: XCLIENT's address, name, HELO and login then drive the relay policy, the plugins and the
// Received header; XFORWARD's name the client of one transaction for Received, logs and what
// plugins describe the message with (session.forwarded), and the peer keeps its own standing and
// every policy (xforward-policy.test.ts). Any other peer gets 500 and no EHLO keyword.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSmtp } from '../helpers/smtp-client.js';
import { startHarness, type Harness } from '../helpers/fakes.js';

const MSG = 'Subject: hi\r\n\r\nhello\r\n.';

function harness(): Promise<Harness> {
  return startHarness({
    config: {
      relay: { networks: ['192.0.2.0/24'] },
      listen: { smtp: { host: '127.0.0.1', port: 0, xclient: { trusted: ['127.0.0.2/32'] } } },
    },
  });
}

test('XCLIENT from a trusted peer: the forwarded client relays; address, name and HELO reach the plugins and Received', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    const ehlo = await s.cmd('EHLO proxy.example', '250');
    assert.match(ehlo, /XCLIENT NAME ADDR PORT PROTO HELO LOGIN/);
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    await s.cmd('RSET', '250');
    await s.cmd('XCLIENT ADDR=192.0.2.7 NAME=client.example HELO=client-helo.example', '220 ');
    const again = await s.cmd('EHLO proxy.example', '250');
    assert.doesNotMatch(again, /XCLIENT/, 'no second XCLIENT after ADDR');
    await s.cmd('MAIL FROM:<a@sender.example>', '250 2.1.0');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    const rcpt = h.pipeline.calls.filter((c) => c.stage === 'rcpt').at(-1)!;
    assert.equal(rcpt.input.session.remoteAddress, '192.0.2.7');
    assert.equal(rcpt.input.session.helo, 'client-helo.example');
    assert.equal(rcpt.input.session.clientHostname, 'client.example');
    const m = h.queue.accepted[0]!;
    assert.equal(m.envelope.source.remoteAddress, '192.0.2.7');
    assert.match(m.message.toString('latin1'), /^Received: from client-helo\.example \(client\.example \[192\.0\.2\.7\]\)/);
  } finally {
    await h.close();
  }
});

test('XCLIENT LOGIN: the peer vouches for the user, who may relay from any address', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XCLIENT ADDR=198.51.100.9 LOGIN=alice@example.test', '220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    s.close();
    const rcpt = h.pipeline.calls.filter((c) => c.stage === 'rcpt').at(-1)!;
    assert.equal(rcpt.input.session.authUser, 'alice@example.test');
    assert.equal(rcpt.input.session.remoteAddress, '198.51.100.9');
  } finally {
    await h.close();
  }
});

test('XCLIENT naming a client outside relay.networks takes away the peer\'s own standing', async () => {
  const h = await startHarness({
    config: { relay: { networks: ['127.0.0.0/8'] }, listen: { smtp: { host: '127.0.0.1', port: 0, xclient: { trusted: ['127.0.0.2'] } } } },
  });
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XCLIENT ADDR=198.51.100.9', '220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    s.close();
  } finally {
    await h.close();
  }
});

test('XFORWARD from a trusted peer sets the client for logs and Received', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    const ehlo = await s.cmd('EHLO proxy.example', '250');
    assert.match(ehlo, /XFORWARD/);
    await s.cmd('XFORWARD ADDR=192.0.2.8 NAME=fwd.example HELO=fwd-helo.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    assert.match(h.queue.accepted[0]!.message.toString('latin1'), /^Received: from fwd-helo\.example \(fwd\.example \[192\.0\.2\.8\]\)/);
  } finally {
    await h.close();
  }
});

test('XCLIENT and XFORWARD from an untrusted peer: not offered, 500 5.5.2, nothing changes', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.3' });
    await s.expect('220 ');
    const ehlo = await s.cmd('EHLO client.example', '250');
    assert.doesNotMatch(ehlo, /XCLIENT|XFORWARD/);
    await s.cmd('XCLIENT ADDR=192.0.2.7', '500 5.5.2');
    await s.cmd('XFORWARD ADDR=192.0.2.7', '500 5.5.2');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    s.close();
    assert.ok(h.pipeline.calls.every((c) => c.input.session.remoteAddress === '127.0.0.3'));
  } finally {
    await h.close();
  }
});

test('a listener without xclient offers neither command', async () => {
  const h = await startHarness();
  try {
    const s = await openSmtp(h.ports.smtp!);
    await s.expect('220 ');
    const ehlo = await s.cmd('EHLO client.example', '250');
    assert.doesNotMatch(ehlo, /XCLIENT|XFORWARD/);
    await s.cmd('XCLIENT ADDR=192.0.2.7', '500 5.5.2');
    s.close();
  } finally {
    await h.close();
  }
});

// XFORWARD is for logs and Received (Postfix's XFORWARD_README): a content filter hands mail back
// naming the client it came from, and the filter, not that client, decides relaying. The names
// last for one mail transaction (Postfix resets them with each one, smtpd mail_reset).
test('XFORWARD naming an outside client: the trusted peer still relays; the next transaction names the peer again', async () => {
  const h = await startHarness({
    config: { relay: { networks: ['127.0.0.0/8'] }, listen: { smtp: { host: '127.0.0.1', port: 0, xclient: { trusted: ['127.0.0.2/32'] } } } },
  });
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO filter.example', '250');
    await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=outside.example HELO=outside-helo.example', '250');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    await s.cmd('MAIL FROM:<alice@example.test>', '250');
    await s.cmd('RCPT TO:<y@foreign.example>', '250 2.1.5');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    const [first, second] = h.queue.accepted.map((m) => m.message.toString('latin1'));
    assert.match(first!, /^Received: from outside-helo\.example \(outside\.example \[198\.51\.100\.9\]\)/);
    assert.match(second!, /^Received: from filter\.example \(\S*\s*\[127\.0\.0\.2\]\)/);
    assert.equal(h.queue.accepted[1]!.envelope.source.remoteAddress, '127.0.0.2');
  } finally {
    await h.close();
  }
});

test('XFORWARD then RSET: the forwarded client is gone before the next transaction', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XFORWARD ADDR=192.0.2.8 NAME=fwd.example', '250');
    await s.cmd('RSET', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    s.close();
    const rcpt = h.pipeline.calls.filter((c) => c.stage === 'rcpt').at(-1)!;
    assert.equal(rcpt.input.session.remoteAddress, '127.0.0.2');
    assert.equal(rcpt.input.session.clientHostname, undefined);
  } finally {
    await h.close();
  }
});

test('XFORWARD cannot lend relaying: an inside address named by XFORWARD does not relay; the same address by XCLIENT does', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XFORWARD ADDR=192.0.2.7 NAME=inside.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    await s.cmd('RSET', '250');
    await s.cmd('XFORWARD ADDR=192.0.2.7', '250');
    // XCLIENT right after, naming the same address: XCLIENT's standing is what counts now.
    await s.cmd('XCLIENT ADDR=192.0.2.7', '220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '250 2.1.5');
    s.close();
    const rcpt = h.pipeline.calls.filter((c) => c.stage === 'rcpt').at(-1)!;
    assert.equal(rcpt.input.session.remoteAddress, '192.0.2.7');
  } finally {
    await h.close();
  }
});

test('XFORWARD then a refused XCLIENT: nothing changes, the peer still may not relay', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO proxy.example', '250');
    await s.cmd('XFORWARD ADDR=192.0.2.7', '250');
    await s.cmd('XCLIENT FOO=bar', '501');
    await s.cmd('RSET', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@foreign.example>', '554 5.7.1');
    s.close();
  } finally {
    await h.close();
  }
});

test('XFORWARD ended by XCLIENT or by a greeting: Received names the client those give, never what XFORWARD named', async () => {
  const h = await harness();
  try {
    const s = await openSmtp(h.ports.smtp!, { localAddress: '127.0.0.2' });
    await s.expect('220 ');
    await s.cmd('EHLO a.example', '250');
    await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=outside.example HELO=b.example', '250');
    // A new greeting equal to XFORWARD's HELO is the client's own now.
    await s.cmd('EHLO b.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    await s.cmd('XFORWARD ADDR=198.51.100.9 NAME=outside.example HELO=outside-helo.example', '250');
    await s.cmd('XCLIENT ADDR=192.0.2.7', '220 ');
    await s.cmd('EHLO c.example', '250');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<alice@example.test>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(MSG, '250 2.0.0');
    s.close();
    const [first, second] = h.queue.accepted.map((m) => m.message.toString('latin1'));
    assert.match(first!, /^Received: from b\.example \(\S*\s*\[127\.0\.0\.2\]\)/);
    assert.match(second!, /^Received: from c\.example \(\[192\.0\.2\.7\]\)/);
  } finally {
    await h.close();
  }
});
