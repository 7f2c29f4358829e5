// `postern sendmail` without a daemon: the message lands in the maildrop, complete and durable,
// and `postern queue list` shows it waiting there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { runSendmail, addressesIn } from '../../../src/cli/sendmail.js';
import { runQueueCommand } from '../../../src/cli/queue.js';
import { maildropDirs } from '../../../src/queue/maildrop.js';
import { parseSpoolFile } from '../../../src/queue/spool.js';
import { readFile } from 'node:fs/promises';

function io(input: string) {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (c: Buffer) => (o += c.toString()));
  err.on('data', (c: Buffer) => (e += c.toString()));
  return { io: { stdin: Readable.from([Buffer.from(input)]), stdout: out, stderr: err, env: {} }, out: () => o, err: () => e };
}

test('address lists from header fields', () => {
  assert.deepEqual(addressesIn('a@x.test, "Doe, J" <b@x.test>, (c) c@x.test, group: d@x.test, e@x.test;'), ['a@x.test', 'b@x.test', 'c@x.test', 'd@x.test', 'e@x.test']);
});

test('sendmail -t -i writes one maildrop file; queue list shows it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-sendmail-'));
  try {
    const cfg = join(dir, 'postern.yaml');
    await writeFile(cfg, 'hostname: mx.example.test\ndata_dir: ./data\ndomains: { local: [example.test] }\n');
    const a = io('To: r1@far.test\nCc: Bob <r2@far.test>\nBcc: r3@far.test\nSubject: s\n\nline\n.\nafter\n');
    assert.equal(await runSendmail(['-t', '-i', '-f', 'me@example.test', '-F', 'Me', '--config', cfg], a.io), 0, a.err());
    const d = maildropDirs(join(dir, 'data'));
    const files = await readdir(d.new);
    assert.equal(files.length, 1);
    const { envelope, message } = parseSpoolFile(await readFile(join(d.new, files[0]!)));
    assert.deepEqual(envelope.recipients.map((r) => r.address), ['r1@far.test', 'r2@far.test', 'r3@far.test']);
    assert.equal(envelope.mailFrom, 'me@example.test');
    assert.equal(envelope.smtputf8, undefined, 'an ASCII message needs no SMTPUTF8');
    const text = message.toString();
    assert.match(text, /^Received: by mx\.example\.test \(Postern/);
    assert.match(text, /^From: "Me" <me@example\.test>\r$/m);
    assert.doesNotMatch(text, /^Bcc:/im);
    assert.ok(text.endsWith('\r\n\r\nline\r\n.\r\nafter\r\n'), 'with -i the "." line is data');

    const b = io('Subject: no -i\n\nx\n.\ny\n');
    assert.equal(await runSendmail(['--config', cfg, 'r4@far.test'], b.io), 0, b.err());
    const c = io('');
    assert.equal(await runQueueCommand(['list', '--config', cfg], c.io), 0, c.err());
    assert.equal((c.out().match(/maildrop, not yet picked up/g) ?? []).length, 2);
    const none = io('Subject: x\n\nbody\n');
    assert.equal(await runSendmail(['--config', cfg], none.io), 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sendmail -t with UTF-8: a UTF-8 To: address is the envelope recipient (SMTPUTF8), a -F name is an encoded word, the message bytes stay as sent', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-sendmail-'));
  try {
    const cfg = join(dir, 'postern.yaml');
    await writeFile(cfg, 'hostname: mx.example.test\ndata_dir: ./data\ndomains: { local: [example.test] }\n');
    const a = io('To: Jöran <jöran@far.test>\nSubject: grüße\n\nbödy\n');
    assert.equal(await runSendmail(['-t', '-f', 'me@example.test', '-F', 'Jörg', '--config', cfg], a.io), 0, a.err());
    const d = maildropDirs(join(dir, 'data'));
    const [file] = await readdir(d.new);
    const { envelope, message } = parseSpoolFile(await readFile(join(d.new, file!)));
    assert.deepEqual(envelope.recipients.map((r) => r.address), ['jöran@far.test']);
    assert.equal(envelope.smtputf8, true);
    const text = message.toString('utf8');
    assert.doesNotMatch(text, /\uFFFD/, 'every byte is valid UTF-8');
    assert.match(text, /^From: =\?UTF-8\?B\?SsO2cmc=\?= <me@example\.test>\r$/m);
    assert.match(text, /^To: Jöran <jöran@far\.test>\r$/m);
    assert.ok(text.endsWith('\r\n\r\nbödy\r\n'));

    // UTF-8 header text with ASCII addresses needs no SMTPUTF8: a next hop without it takes it.
    const b = io('To: r@far.test\nSubject: Café\n\nx\n');
    assert.equal(await runSendmail(['-t', '-f', 'me@example.test', '-F', 'José', '--config', cfg], b.io), 0, b.err());
    const second = (await readdir(d.new)).find((n) => n !== file)!;
    assert.equal(parseSpoolFile(await readFile(join(d.new, second))).envelope.smtputf8, undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
