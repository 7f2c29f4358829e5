// End to end: repeated RCPTs through `postern start`, the real queue and Maildirs, with Python's
// smtplib. RFC 2033 §4.2: an LMTP server answers every successful RCPT after the final dot, in
// order, "even if there were multiple successful RCPT commands giving the same forward-path",
// while each mailbox keeps one copy. Over SMTP a repeat stays one recipient and one reply.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { readMaildir, waitFor } from '../helpers/wait.js';
import { pythonJson } from '../helpers/python.js';

const message = (id: string) => `From: <sender@remote.example>\r\nSubject: repeats\r\nMessage-ID: <${id}@remote.example>\r\n\r\nbody\r\n`;

interface Session {
  rcpt: number[];
  /** The replies after the final dot, or what came before they stopped. */
  data: [number, string][] | string;
  noop: [number, string] | null;
}

// RCPTs from argv[3:], the message on stdin; after the dot, as many replies as there were
// RCPTs are read (smtplib's data() reads the first), then NOOP must get its own.
const SESSION = `
import smtplib, socket, sys, json
lmtp = sys.argv[2] == 'lmtp'
s = (smtplib.LMTP if lmtp else smtplib.SMTP)('127.0.0.1', int(sys.argv[1]), timeout=5)
s.ehlo('py.example')
s.mail('sender@remote.example')
rcpts = sys.argv[3:]
codes = [s.rcpt(r)[0] for r in rcpts]
data = [s.data(sys.stdin.read().encode())]
noop = None
try:
    while lmtp and len(data) < len(rcpts):
        data.append(s.getreply())
    noop = s.noop()
    out = [[c, m.decode()] for c, m in data]
except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected):
    out = 'no more replies after %r' % [[c, m.decode()] for c, m in data]
print(json.dumps({'rcpt': codes, 'data': out, 'noop': noop and [noop[0], noop[1].decode()]}))
s.close()
`;

describe('repeated RCPTs with the real queue', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon();
    for (const u of ['alice', 'bob', 'carol', 'dave']) {
      const r = await d.cli(['user', 'add', `${u}@example.test`, '--password-stdin'], `pw-${u}\n`);
      assert.equal(r.code, 0, r.stderr);
    }
    const a = await d.cli(['user', 'alias', 'team@example.test', 'alice@example.test', 'bob@example.test']);
    assert.equal(a.code, 0, a.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  const session = (listener: 'lmtp' | 'smtp', rcpts: string[], id: string) => pythonJson<Session>(SESSION, [String(d.ports[listener]), listener, ...rcpts], { input: message(id) });
  const copies = async (user: string, id: string) => (await readMaildir(d, user)).filter((m) => m.bytes.includes(`<${id}@remote.example>`));

  it('LMTP: every RCPT answered in order (repeats, case variants, subaddress, alias), one copy per mailbox', async () => {
    const rcpts = ['alice@example.test', 'ALICE@example.test', 'alice+tag@example.test', 'bob@example.test', 'team@example.test', 'alice@example.test'];
    const r = await session('lmtp', rcpts, 'lmtp-repeats');
    assert.deepEqual(r.rcpt, rcpts.map(() => 250));
    assert.ok(Array.isArray(r.data), String(r.data));
    assert.equal(r.data.length, rcpts.length);
    for (const [code, text] of r.data) {
      assert.equal(code, 250);
      assert.match(text, /^2\.0\.0 Delivered as \S+$/);
    }
    assert.deepEqual(r.noop, [250, '2.0.0 OK']);
    // Delivered before the replies (no spool round to wait for).
    assert.equal((await copies('alice', 'lmtp-repeats')).length, 1);
    assert.equal((await copies('bob', 'lmtp-repeats')).length, 1);
  });

  it("LMTP: a repeated RCPT of a mailbox that cannot be written hears that mailbox's failure", async () => {
    // A file where dave's Maildir would be: his delivery fails for now, alice's goes through.
    await writeFile(join(d.dataDir, 'mail', 'example.test', 'dave'), 'not a Maildir');
    const rcpts = ['dave@example.test', 'alice@example.test', 'DAVE@example.test', 'dave+x@example.test'];
    const r = await session('lmtp', rcpts, 'lmtp-failed');
    assert.ok(Array.isArray(r.data), String(r.data));
    assert.deepEqual(r.data.map(([c]) => c), [451, 250, 451, 451]);
    assert.equal(r.data[2]![1], r.data[0]![1]);
    assert.deepEqual(r.noop, [250, '2.0.0 OK']);
    assert.equal((await copies('alice', 'lmtp-failed')).length, 1);
  });

  it('SMTP: repeated RCPTs are one recipient, one reply after DATA, one copy', async () => {
    const r = await session('smtp', ['carol@example.test', 'CAROL@example.test', 'carol@example.test', 'carol+x@example.test'], 'smtp-repeats');
    assert.deepEqual(r.rcpt, [250, 250, 250, 250]);
    assert.ok(Array.isArray(r.data), String(r.data));
    assert.equal(r.data.length, 1);
    assert.match(r.data[0]![1], /^2\.0\.0 Ok: queued as /);
    assert.deepEqual(r.noop, [250, '2.0.0 OK']);
    const got = await waitFor(() => copies('carol', 'smtp-repeats'), (m) => m.length > 0);
    assert.equal(got.length, 1);
  });
});
