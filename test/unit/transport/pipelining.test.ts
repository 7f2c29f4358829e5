// The outbound client's command pipelining (RFC 2920) against a scripted next hop: with
// PIPELINING the envelope (RSET on a reused connection, MAIL, every RCPT, DATA) goes out as one
// group before any reply, and each way a group can fail leaves the right result per recipient
// and never a message the client did not mean to send.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startScriptedHop, type ScriptedHop, type ScriptedHopOptions } from '../../helpers/scripted-hop.js';
import { openSession, type ClientSession, type Destination, type OutMessage } from '../../../src/transport/smtp-client.js';
import { ConnectionPool } from '../../../src/transport/pool.js';
import { decodeXtext, encodeXtext } from '../../../src/smtp/params.js';
import { waitFor } from '../../helpers/wait.js';

const hops: ScriptedHop[] = [];
const sessions: ClientSession[] = [];
const pools: ConnectionPool[] = [];
after(async () => {
  for (const p of pools) p.close();
  for (const s of sessions) s.close();
  for (const h of hops) await h.stop();
});

const CLIENT = { hostname: 'out.example.test', connectTimeoutMs: 2000 };

async function hop(o: ScriptedHopOptions): Promise<{ hop: ScriptedHop; dest: Destination }> {
  const h = await startScriptedHop(o);
  hops.push(h);
  return { hop: h, dest: { host: '127.0.0.1', port: h.port, name: 'hop.test', protocol: 'smtp', tls: 'none' } };
}

async function session(dest: Destination): Promise<ClientSession> {
  const opened = await openSession(dest, CLIENT);
  assert.ok(opened.ok, 'session opened');
  sessions.push(opened.session);
  return opened.session;
}

const message = (to: string[], extra: Partial<OutMessage> = {}): OutMessage => ({
  mailFrom: 'a@example.test',
  recipients: to.map((address) => ({ address })),
  message: Buffer.from('Subject: t\r\n\r\nline one\r\n.leading dot\r\n'),
  ...extra,
});

test('PIPELINING: MAIL, every RCPT and DATA reach the next hop before it answers any of them', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING', 'SIZE 1000000'], holdUntilData: true });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test', 'y@hop.test']));
  assert.equal(r.results.get('x@hop.test')!.status, 'sent');
  assert.equal(r.results.get('y@hop.test')!.status, 'sent');
  const c = h.connections[0]!;
  assert.equal(c.stalls, 0, 'the client did not wait for a reply inside the group');
  assert.deepEqual(c.commands.slice(1).map((l) => l.split(/[ :]/)[0]), ['MAIL', 'RCPT', 'RCPT', 'DATA']);
  assert.match(c.commands[1]!, /^MAIL FROM:<a@example\.test> SIZE=\d+$/);
  // Dot-stuffing still applies to the body sent after the 354.
  assert.deepEqual(c.bodies, ['Subject: t\r\n\r\nline one\r\n.leading dot']);
});

test('a reused connection puts RSET at the head of the group; two messages, one connection', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], holdUntilData: true });
  const pool = new ConnectionPool({ maxMessages: 10, idleTimeoutMs: 60_000, idleLimit: 2 });
  pools.push(pool);
  for (const to of ['one@hop.test', 'two@hop.test']) {
    const r = await pool.send(dest, message([to]), CLIENT);
    assert.equal(r.results.get(to)!.status, 'sent');
  }
  assert.equal(h.connections.length, 1);
  const c = h.connections[0]!;
  assert.equal(c.stalls, 0);
  assert.deepEqual(c.commands.slice(1).map((l) => l.split(/[ :]/)[0]), ['MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA']);
  assert.equal(c.bodies.length, 2);
});

test('without PIPELINING each command waits for its reply', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['SIZE 1000000'] });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test', 'y@hop.test']));
  assert.equal(r.results.get('y@hop.test')!.status, 'sent');
  const c = h.connections[0]!;
  assert.ok(c.batches.every((b) => b.length === 1), `one command per read: ${JSON.stringify(c.batches)}`);
  assert.equal(c.bodies.length, 1);
});

test('one RCPT refused inside the group: the other recipient gets the message, the refused one its own reply', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.includes('<bad@') ? '550 5.1.1 no such user' : undefined) });
  const s = await session(dest);
  const r = await s.transact(message(['good@hop.test', 'bad@hop.test']));
  assert.equal(r.results.get('good@hop.test')!.status, 'sent');
  const bad = r.results.get('bad@hop.test')!;
  assert.deepEqual([bad.status, bad.code, bad.enhanced, bad.remote], ['perm', 550, '5.1.1', true]);
  assert.equal(h.connections[0]!.bodies.length, 1);
});

test('every RCPT refused and DATA answered 354 anyway: no body goes out, the connection is dropped, each recipient keeps its reply', async () => {
  const { hop: h, dest } = await hop({
    ehlo: ['PIPELINING'],
    answer: (l) => (l.startsWith('RCPT') ? (l.includes('<t@') ? '452 4.2.2 mailbox full' : '550 5.1.1 unknown') : undefined),
  });
  const s = await session(dest);
  const r = await s.transact(message(['t@hop.test', 'p@hop.test']));
  assert.deepEqual([r.results.get('t@hop.test')!.status, r.results.get('t@hop.test')!.code], ['temp', 452]);
  assert.deepEqual([r.results.get('p@hop.test')!.status, r.results.get('p@hop.test')!.code], ['perm', 550]);
  assert.equal(s.reusable, false);
  const c = h.connections[0]!;
  await waitFor(() => c.closed, (closed) => closed);
  assert.equal(c.closedInData, true, 'closed without the final dot');
  assert.deepEqual(c.bodies, []);
});

test('every RCPT refused and DATA refused (554, as RFC 2920 asks): nothing sent, each recipient keeps its reply', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.startsWith('RCPT') ? '550 5.1.1 unknown' : l === 'DATA' ? '554 5.5.1 no valid recipients' : undefined) });
  const s = await session(dest);
  const r = await s.transact(message(['p@hop.test']));
  const p = r.results.get('p@hop.test')!;
  assert.deepEqual([p.status, p.code, p.enhanced], ['perm', 550, '5.1.1']);
  assert.deepEqual(h.connections[0]!.bodies, []);
});

test('MAIL refused inside the group: every recipient gets the MAIL reply, nothing is sent', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.startsWith('MAIL') ? '452 4.3.1 insufficient storage' : l.startsWith('RCPT') ? '503 5.5.1 need MAIL' : l === 'DATA' ? '503 5.5.1 need RCPT' : undefined) });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test', 'y@hop.test']));
  for (const a of ['x@hop.test', 'y@hop.test']) {
    const x = r.results.get(a)!;
    assert.deepEqual([x.status, x.code, x.enhanced], ['temp', 452, '4.3.1']);
  }
  assert.deepEqual(h.connections[0]!.bodies, []);
});

test('DATA refused after the recipients were accepted: every recipient gets the DATA reply', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l === 'DATA' ? '451 4.3.0 try later' : undefined) });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test']));
  const x = r.results.get('x@hop.test')!;
  assert.deepEqual([x.status, x.code], ['temp', 451]);
  assert.deepEqual(h.connections[0]!.bodies, []);
});

test('a pooled connection whose RSET is refused (421) is dropped and the message goes once over a new one', async () => {
  let rsets = 0;
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l === 'RSET' && ++rsets === 1 ? { reply: '421 4.4.2 idle too long', close: true } : undefined) });
  const pool = new ConnectionPool({ maxMessages: 10, idleTimeoutMs: 60_000, idleLimit: 2 });
  pools.push(pool);
  assert.equal((await pool.send(dest, message(['one@hop.test']), CLIENT)).results.get('one@hop.test')!.status, 'sent');
  const second = await pool.send(dest, message(['two@hop.test']), CLIENT);
  assert.equal(second.results.get('two@hop.test')!.status, 'sent');
  assert.equal(h.connections.length, 2);
  assert.equal(h.connections[0]!.bodies.length, 1, 'nothing more on the refused connection');
  assert.equal(h.connections[1]!.bodies.length, 1);
  assert.deepEqual(h.connections[1]!.commands.slice(1).map((l) => l.split(/[ :]/)[0]), ['MAIL', 'RCPT', 'DATA'], 'a fresh connection needs no RSET');
});

test('DSN parameters ride in the group: RET and ENVID (xtext) on MAIL, each recipient its own NOTIFY and ORCPT', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING', 'DSN', '8BITMIME', 'SMTPUTF8'] });
  const s = await session(dest);
  const msg = message(['x@hop.test', 'y@hop.test'], { ret: 'HDRS', envid: 'id+1 =z', message: Buffer.from('Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n', 'latin1') });
  msg.recipients[0]!.notify = ['FAILURE', 'DELAY'];
  msg.recipients[1]!.notify = ['NEVER'];
  msg.recipients[1]!.orcpt = 'rfc822;y@orig.test';
  const r = await s.transact(msg);
  assert.equal(r.dsn, true);
  const c = h.connections[0]!;
  assert.equal(c.commands[1], 'MAIL FROM:<a@example.test> BODY=8BITMIME RET=HDRS ENVID=id+2B1+20+3Dz');
  assert.equal(c.commands[2], 'RCPT TO:<x@hop.test> NOTIFY=FAILURE,DELAY');
  assert.equal(c.commands[3], 'RCPT TO:<y@hop.test> NOTIFY=NEVER ORCPT=rfc822;y@orig.test');
});

test('an address with CR, LF or angle brackets is refused before anything is sent', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'] });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test>\r\nRCPT TO:<evil@hop.test']));
  assert.notEqual(r.results.get('x@hop.test>\r\nRCPT TO:<evil@hop.test')!.status, 'sent');
  assert.deepEqual(h.connections[0]!.commands.filter((l) => !l.startsWith('EHLO')), []);
});

test('addresses are trimmed and an empty recipient is refused before anything is sent, as in the library path', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], holdUntilData: true });
  const s = await session(dest);
  const r = await s.transact(message([' x@hop.test '], { mailFrom: ' a@example.test' }));
  assert.equal(r.results.get(' x@hop.test ')!.status, 'sent');
  assert.deepEqual(h.connections[0]!.commands.slice(1, 3), ['MAIL FROM:<a@example.test>', 'RCPT TO:<x@hop.test>']);

  const { hop: h2, dest: dest2 } = await hop({ ehlo: ['PIPELINING'] });
  const s2 = await session(dest2);
  const empty = await s2.transact(message(['y@hop.test', '  ']));
  for (const a of ['y@hop.test', '  ']) {
    assert.equal(empty.results.get(a)!.status, 'temp', a);
    assert.match(empty.results.get(a)!.text, /Invalid recipient ""/);
  }
  assert.deepEqual(h2.connections[0]!.commands.filter((l) => !l.startsWith('EHLO')), []);
});

test('xtext encoding round-trips and leaves plain values alone', () => {
  assert.equal(encodeXtext('plain-id.1'), 'plain-id.1');
  assert.equal(encodeXtext('a+b=c d'), 'a+2Bb+3Dc+20d');
  assert.equal(encodeXtext('é'), '+C3+A9');
  for (const v of ['a+b=c d', 'x\ty', '+++', 'é€']) assert.equal(Buffer.from(decodeXtext(encodeXtext(v)), 'latin1').toString('utf8'), v);
});

// --- per-recipient results when the transaction fails after RCPT ---------------------------

const statusOf = (r: Awaited<ReturnType<ClientSession['transact']>>, a: string) => {
  const x = r.results.get(a)!;
  return `${x.status} ${x.code}`;
};

test('every RCPT refused, DATA refused and the server hangs up: each recipient gets its own 550, not a connection failure', async () => {
  const { dest } = await hop({ ehlo: ['PIPELINING'], holdUntilData: true, answer: (l) => (l.startsWith('RCPT') ? '550 5.1.1 unknown' : l === 'DATA' ? { reply: '554 5.5.1 no valid recipients', close: true } : undefined) });
  const r = await (await session(dest)).transact(message(['p@hop.test', 'q@hop.test']));
  assert.equal(statusOf(r, 'p@hop.test'), 'perm 550');
  assert.equal(statusOf(r, 'q@hop.test'), 'perm 550');
});

test('DATA refused: the refused recipient keeps its RCPT reply (452 stays temporary), the accepted one gets the DATA reply', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.includes('<bad@') ? '452 4.2.2 mailbox full' : l === 'DATA' ? '554 5.7.1 policy' : undefined) });
  const r = await (await session(dest)).transact(message(['good@hop.test', 'bad@hop.test']));
  assert.equal(statusOf(r, 'good@hop.test'), 'perm 554');
  assert.equal(statusOf(r, 'bad@hop.test'), 'temp 452');
  assert.deepEqual(h.connections[0]!.bodies, []);
});

test('DATA deferred: a recipient refused for good at RCPT is not retried', async () => {
  const { dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.includes('<bad@') ? '550 5.1.1 unknown' : l === 'DATA' ? '451 4.3.0 later' : undefined) });
  const r = await (await session(dest)).transact(message(['good@hop.test', 'bad@hop.test']));
  assert.equal(statusOf(r, 'good@hop.test'), 'temp 451');
  assert.equal(statusOf(r, 'bad@hop.test'), 'perm 550');
});

test('the reply after the final dot refuses: only the accepted recipients take it', async () => {
  const { dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.includes('<bad@') ? '452 4.2.2 mailbox full' : undefined), afterData: () => '554 5.7.1 rejected' });
  const r = await (await session(dest)).transact(message(['good@hop.test', 'bad@hop.test']));
  assert.equal(statusOf(r, 'good@hop.test'), 'perm 554');
  assert.equal(statusOf(r, 'bad@hop.test'), 'temp 452');
});

test('without PIPELINING too: DATA refused leaves the refused recipient its own RCPT reply', async () => {
  const { dest } = await hop({ ehlo: [], answer: (l) => (l.includes('<bad@') ? '452 4.2.2 mailbox full' : l === 'DATA' ? '554 5.7.1 policy' : undefined) });
  const r = await (await session(dest)).transact(message(['good@hop.test', 'bad@hop.test']));
  assert.equal(statusOf(r, 'good@hop.test'), 'perm 554');
  assert.equal(statusOf(r, 'bad@hop.test'), 'temp 452');
});

// --- a server whose replies are out of step with the commands -------------------------------

test('a 354 where the RCPT reply belongs is not "delivered": no body goes out, the recipient is retried', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.startsWith('RCPT') ? '354 go ahead' : l === 'DATA' ? '250 2.1.5 ok' : undefined) });
  const r = await (await session(dest)).transact(message(['x@hop.test']));
  assert.equal(r.results.get('x@hop.test')!.status, 'temp');
  assert.deepEqual(h.connections[0]!.bodies, []);
});

test('an extra line after a RCPT reply puts a 250 in the DATA slot: the body is not sent (it would be taken twice), the connection is dropped', async () => {
  const { hop: h, dest } = await hop({ ehlo: ['PIPELINING'], answer: (l) => (l.startsWith('RCPT') ? '250 ok\r\n250 ok again' : undefined) });
  const s = await session(dest);
  const r = await s.transact(message(['x@hop.test']));
  assert.equal(r.results.get('x@hop.test')!.status, 'temp');
  assert.deepEqual(h.connections[0]!.bodies, []);
  await waitFor(() => h.connections[0]!.closed, (closed) => closed);
});
