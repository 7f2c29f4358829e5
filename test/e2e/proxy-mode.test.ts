// In-line proxy (`routes.<domain>.mode: proxy`) end to end: the real daemon in front of a
// scripted loopback backend (smtp-server). The client's replies are the backend's own; nothing
// is spooled; the backend sees the original client through XCLIENT; a gateway rule's header edit
// is in the bytes the backend gets; a backend killed mid-DATA gives the client 451 and keeps no
// message; LMTP gives one reply per recipient; a client's RSET hands the backend connection back
// at once.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';

interface Backend {
  port: number;
  messages: { from: string; to: string[]; data: string; xclientAddr: string; helo: string }[];
  /** Every MAIL FROM, with the backend session that got it. */
  mails: { session: string; from: string }[];
  connections: number;
  /** Data chunks seen by transactions that never completed (killed mid-DATA). */
  partial: number;
  stop(): Promise<void>;
}

const refuse = (code: number, message: string) => Object.assign(new Error(message), { responseCode: code });

/** A scripted backend: refuses rcpt "unknown@…" (550 5.1.1), DATA with "Subject: refuse" (554 5.7.1), and dies on "Subject: die". */
async function startBackend(opts: { lmtp?: boolean } = {}): Promise<Backend> {
  const b: Backend = { port: 0, messages: [], mails: [], connections: 0, partial: 0, stop: async () => undefined };
  const o: SMTPServerOptions = {
    lmtp: !!opts.lmtp,
    logger: false,
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    useXClient: ['127.0.0.1'],
    onConnect(_s, cb) {
      b.connections++;
      cb();
    },
    onMailFrom(addr, session, cb) {
      b.mails.push({ session: session.id, from: addr.address });
      cb();
    },
    onRcptTo(addr, _s, cb) {
      if (addr.address.startsWith('unknown@')) return cb(refuse(550, '5.1.1 <' + addr.address + '>: Recipient address rejected: User unknown in local recipient table'));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => {
        chunks.push(c);
        if (Buffer.concat(chunks).includes('Subject: die')) {
          b.partial++;
          for (const conn of server.connections) (conn as unknown as { _socket: { destroy(): void } })._socket.destroy();
        }
      });
      stream.on('end', () => {
        const data = Buffer.concat(chunks).toString('latin1');
        if (data.includes('Subject: refuse')) return cb(refuse(554, '5.7.1 Message content rejected by the backend'));
        const to = session.envelope.rcptTo.map((r) => r.address);
        b.messages.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to, data, xclientAddr: session.remoteAddress, helo: String(session.xClient.get('HELO') ?? '') });
        if (opts.lmtp) return cb(null, to.map((t) => (t.startsWith('full@') ? refuse(452, '4.2.2 Mailbox full') : `2.0.0 <${t}> Saved`)) as unknown as string);
        cb(null, '2.0.0 Ok: queued as BACKEND1');
      });
    },
  };
  const server = new SMTPServer(o);
  server.on('error', () => undefined);
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  b.port = (server.server.address() as { port: number }).port;
  b.stop = () => new Promise<void>((res) => server.close(() => res()));
  return b;
}

async function session(port: number, ehlo = 'EHLO client.example'): Promise<SmtpTranscript> {
  const s = await openSmtp(port);
  await s.expect('220');
  await s.cmd(ehlo, '250');
  return s;
}

const spooled = async (d: RunningDaemon) => (await readdir(join(d.dataDir, 'spool', 'q')).catch(() => [] as string[])).length;

describe('routes mode: proxy', () => {
  let smtp: Backend;
  let lmtp: Backend;
  let reset: Backend;
  let d: RunningDaemon;
  let rulesDir: string;
  before(async () => {
    smtp = await startBackend();
    lmtp = await startBackend({ lmtp: true });
    reset = await startBackend();
    rulesDir = await mkdtemp(join(tmpdir(), 'postern-proxy-rules-'));
    const rule = join(rulesDir, 'tag.sieve');
    await writeFile(rule, 'require ["editheader"];\naddheader "X-Gateway-Rule" "seen";\n');
    d = await startDaemon({
      relay: { networks: [] },
      plugins: [{ sieve: { scripts: [rule] } }],
      routes: {
        'corp.example': { nexthop: `smtp://127.0.0.1:${smtp.port}`, mode: 'proxy' },
        'store.example': { nexthop: `lmtp://127.0.0.1:${lmtp.port}`, mode: 'proxy' },
        'queued.example': `smtp://127.0.0.1:${smtp.port}`,
        'dead.example': { nexthop: 'smtp://127.0.0.1:9', mode: 'proxy' },
        'reset.example': { nexthop: `smtp://127.0.0.1:${reset.port}`, mode: 'proxy' },
      },
    });
  });
  after(async () => {
    await d.stop();
    await removeDir(d.dir);
    await smtp.stop();
    await lmtp.stop();
    await reset.stop();
    await rm(rulesDir, { recursive: true, force: true });
  });

  it('backend 250 → client gets the backend reply; nothing spooled; XCLIENT and the rule header reach the backend', { timeout: 30_000 }, async () => {
    const s = await session(d.ports.smtp!);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<alice@corp.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: hello\r\n\r\nbody\r\n..leading dot\r\n.', '250 2.0.0 Ok: queued as BACKEND1');
    s.close();
    assert.equal(smtp.messages.length, 1);
    const m = smtp.messages[0]!;
    assert.deepEqual(m.to, ['alice@corp.example']);
    assert.equal(m.xclientAddr, '127.0.0.1');
    assert.equal(m.helo, 'client.example');
    assert.match(m.data, /^X-Gateway-Rule: seen\r\n/m);
    assert.match(m.data, /^Received: from client\.example \(\[127\.0\.0\.1\]\)/m);
    assert.match(m.data, /\r\n\.leading dot\r\n$/, 'dot-stuffing undone by the backend');
    assert.equal(await spooled(d), 0);
  });

  it('backend 550 at RCPT and 554 at DATA reach the client with the same codes', { timeout: 30_000 }, async () => {
    const s = await session(d.ports.smtp!);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<unknown@corp.example>', '550 5.1.1 <unknown@corp.example>: Recipient address rejected');
    await s.cmd('RCPT TO:<bob@corp.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: refuse\r\n\r\nx\r\n.', '554 5.7.1 Message content rejected by the backend');
    s.close();
    assert.equal(await spooled(d), 0);
  });

  it('backend killed mid-DATA → client 451, backend kept nothing, nothing spooled', { timeout: 30_000 }, async () => {
    const before = smtp.messages.length;
    const s = await session(d.ports.smtp!);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<carol@corp.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd(`Subject: die\r\n\r\n${`${'x'.repeat(98)}\r\n`.repeat(2000)}.`, '451 4.4.2');
    s.close();
    assert.ok(smtp.partial >= 1, 'the backend saw part of the message');
    assert.equal(smtp.messages.length, before, 'and kept none of it');
    assert.equal(await spooled(d), 0);
  });

  it('an unreachable backend is 451 4.4.1 at RCPT; recipients for another destination get 452 4.5.3', { timeout: 30_000 }, async () => {
    const s = await session(d.ports.smtp!);
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<x@dead.example>', '451 4.4.1');
    await s.cmd('RCPT TO:<alice@corp.example>', '250');
    await s.cmd('RCPT TO:<x@queued.example>', '452 4.5.3');
    await s.cmd('RCPT TO:<x@store.example>', '452 4.5.3');
    await s.cmd('RSET', '250');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<x@queued.example>', '250');
    await s.cmd('RCPT TO:<alice@corp.example>', '452 4.5.3');
    s.close();
  });

  it('a client RSET ends the backend transaction: the next client gets that backend connection', { timeout: 30_000 }, async () => {
    const first = await session(d.ports.smtp!);
    await first.cmd('MAIL FROM:<first@remote.example>', '250');
    await first.cmd('RCPT TO:<alice@reset.example>', '250');
    await first.cmd('RSET', '250');
    // The first client stays connected, so only its RSET can have freed the backend connection.
    const second = await session(d.ports.smtp!);
    await second.cmd('MAIL FROM:<second@remote.example>', '250');
    await second.cmd('RCPT TO:<bob@reset.example>', '250');
    await second.cmd('DATA', '354');
    await second.cmd('Subject: after rset\r\n\r\nx\r\n.', '250 2.0.0');
    second.close();
    first.close();
    const sessionOf = (from: string) => reset.mails.find((m) => m.from === from)?.session;
    assert.ok(sessionOf('first@remote.example'));
    assert.equal(sessionOf('second@remote.example'), sessionOf('first@remote.example'));
    assert.equal(reset.connections, 1);
  });

  it('LMTP client through an LMTP backend: one backend reply per recipient', { timeout: 30_000 }, async () => {
    const s = await session(d.ports.lmtp!, 'LHLO client.example');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    await s.cmd('RCPT TO:<dave@store.example>', '250');
    await s.cmd('RCPT TO:<full@store.example>', '250');
    await s.cmd('DATA', '354');
    await s.cmd('Subject: two\r\n\r\nx\r\n.', '250 2.0.0 <dave@store.example> Saved');
    await s.expect('452 4.2.2 Mailbox full');
    s.close();
    assert.equal(lmtp.messages.length, 1);
    assert.equal(await spooled(d), 0);
  });

  it('LMTP client, repeated RCPTs: each answered with its recipient\'s backend reply; the backend sees each recipient once', { timeout: 30_000 }, async () => {
    const s = await session(d.ports.lmtp!, 'LHLO client.example');
    await s.cmd('MAIL FROM:<sender@remote.example>', '250');
    for (const r of ['dave@store.example', 'DAVE@store.example', 'full@store.example', 'dave@store.example']) await s.cmd(`RCPT TO:<${r}>`, '250');
    await s.cmd('DATA', '354');
    // RFC 2033 §4.2: one reply per successful RCPT, repeats included; the NOOP after the dot gets its own.
    s.send('Subject: repeats\r\n\r\nx\r\n.\r\nNOOP');
    const replies: (string | null)[] = [];
    for (let i = 0; i < 5; i++) replies.push(await s.reply());
    assert.deepEqual(replies, ['250 2.0.0 <dave@store.example> Saved', '250 2.0.0 <dave@store.example> Saved', '452 4.2.2 Mailbox full', '250 2.0.0 <dave@store.example> Saved', '250 2.0.0 OK']);
    s.close();
    const m = lmtp.messages.find((x) => x.data.includes('Subject: repeats'));
    assert.deepEqual(m?.to, ['dave@store.example', 'full@store.example']);
    assert.equal(await spooled(d), 0);
  });
});
