import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
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
