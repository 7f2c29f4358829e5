import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { LocalDelivery, safeSegment, targetKey } from '../../../src/delivery/local.js';
import { testConfig } from '../queue/helpers.js';

test('path segments cannot leave the mail tree', () => {
  const cases: [string, string][] = [
    ['alice', 'alice'],
    ['a.b+c=d-e_f', 'a.b+c=d-e_f'],
    ['..', '%2E.'],
    ['.hidden', '%2Ehidden'],
    ['a/b', 'a%2Fb'],
    ['x y', 'x%20y'],
    ['ü', '%C3%BC'],
    ['', '_'],
  ];
  for (const [input, want] of cases) assert.equal(safeSegment(input), want, input);
});

test('mailbox path template', () => {
  const config = testConfig('/data', { mailbox: { path: '{data_dir}/mail/{domain}/{local}' } });
  const l = new LocalDelivery(config, new DirSyncer());
  assert.equal(l.mailboxPath('alice@example.test'), '/data/mail/example.test/alice');
  assert.equal(l.mailboxPath('"../../etc"@example.test'), '/data/mail/example.test/%2E.%2F..%2Fetc');
  // A relative template is relative to the config file's folder, like data_dir.
  const rel = testConfig('/data', { mailbox: { format: 'mbox', path: 'boxes/{user}' } });
  const u = new LocalDelivery(rel, new DirSyncer());
  assert.equal(u.mailboxPath('bob@example.test'), resolve(rel.baseDir, 'boxes/bob@example.test'));
});

test('target keys differ per user and folder, and ignore spelling of the same folder', () => {
  assert.notEqual(targetKey('a@example.test', undefined), targetKey('b@example.test', undefined));
  assert.notEqual(targetKey('a@example.test', undefined), targetKey('a@example.test', 'Junk'));
  assert.equal(targetKey('a@example.test', undefined), targetKey('A@example.test', 'INBOX'));
  assert.equal(targetKey('a@example.test', 'A/B'), targetKey('a@example.test', 'A.B'));
  assert.match(targetKey('a@example.test', undefined), /^[0-9a-f]{16}$/);
});

test('a Maildir delivery stores trace headers and the message with LF ends; S= is the stored size; a retry finds it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-local-'));
  try {
    const config = testConfig(dir, { mailbox: { path: '{data_dir}/mail/{domain}/{local}' } });
    const l = new LocalDelivery(config, new DirSyncer());
    // CRLF everywhere, plus a bare CR and a bare LF that must stay as they are.
    const message = Buffer.from('Subject: t\r\nX-Odd: a\rb\r\n\r\nline\r\nbare\nlf\r\n\xe9\r\n', 'latin1');
    const req = { qid: 'Q0LF', sender: 's@remote.test', receivedAt: 1_700_000_000_123, user: 'alice@example.test', message, checkExisting: false };
    const first = await l.deliver(req);
    assert.equal(first.duplicate, false);
    const path = first.destination.replace(/^maildir:/, '');
    assert.deepEqual(first.copies, [{ kind: 'maildir', file: path }], 'the file it wrote');
    const stored = await readFile(path);
    const want = Buffer.concat([Buffer.from('Return-Path: <s@remote.test>\nDelivered-To: alice@example.test\n'), Buffer.from('Subject: t\nX-Odd: a\rb\n\nline\nbare\nlf\n\xe9\n', 'latin1')]);
    assert.ok(stored.equals(want), JSON.stringify(stored.toString('latin1')));
    assert.match(path, new RegExp(`/new/1700000000\\.M123000QQ0LFR[0-9a-f]+\\..*,S=${want.length}$`));
    assert.deepEqual(await readdir(join(dir, 'mail', 'example.test', 'alice', 'tmp')), [], 'nothing left in tmp/');
    const again = await l.deliver({ ...req, checkExisting: true });
    assert.deepEqual(again, { destination: first.destination, duplicate: true, copies: [{ kind: 'maildir', file: path, found: true }] }, 'a duplicate wrote nothing, and names the copy it found');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
