// Folder names on disk in IMAP's modified UTF-7 (RFC 3501 §5.1.3): the RFC's own example, and
// Dovecot's converter (`doveadm mailbox mutf7`, Debian's dovecot-core) as the independent
// implementation, over fixed and generated names; then a delivery into a non-ASCII folder lands
// in the directory Dovecot would use for it. Dovecot missing → the test fails and says what to install.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { encodeMutf7 } from '../../../src/delivery/mutf7.js';
import { FolderNameError, folderDiskName, maildirPlusName } from '../../../src/delivery/folder.js';
import { LocalDelivery } from '../../../src/delivery/local.js';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { requireExecutables } from '../../helpers/system-service.js';
import { runCommand } from '../../helpers/run-command.js';
import { tempDir, testConfig } from '../queue/helpers.js';
import { readWithPython } from './python.js';

const DOVEADM = '/usr/bin/doveadm';

/** Dovecot's own UTF-8 → modified UTF-7, one name per argument. */
async function dovecotMutf7(names: string[]): Promise<string[]> {
  await requireExecutables('Dovecot (doveadm)', [DOVEADM], ['dovecot-core']);
  const r = await runCommand(DOVEADM, ['mailbox', 'mutf7', '-8', ...names]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').slice(0, names.length);
}

test('modified UTF-7: the RFC 3501 example and the escapes', () => {
  assert.equal(encodeMutf7('~peter/mail/台北/日本語'), '~peter/mail/&U,BTFw-/&ZeVnLIqe-');
  assert.equal(encodeMutf7('Q&A'), 'Q&-A');
  assert.equal(encodeMutf7('Sent'), 'Sent');
  assert.equal(encodeMutf7('x😀y'), 'x&2D3eAA-y');
});

test('modified UTF-7 agrees with Dovecot on fixed and generated names', async () => {
  const fixed = ['Entwürfe', 'Gelöschte Elemente', 'Corbeille à papier', 'Входящие', '迷惑メール', 'a&b&&c', 'émoji 😀 and text', 'Ā'];
  // Names as Sieve scripts carry them: any Unicode but controls, '/', '.' and '\\' (folder.ts refuses or splits on those).
  const generated = fc.sample(
    // eslint-disable-next-line no-control-regex
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((s) => !/[\u0000-\u001f\u007f/.\\]/.test(s) && s.trim() === s && s !== ''),
    { numRuns: 60, seed: 7 },
  );
  const names = [...fixed, ...generated];
  assert.deepEqual(names.map(encodeMutf7), await dovecotMutf7(names));
});

test('folder names on disk: modified UTF-7 by default, UTF-8 on request, 250 bytes at most either way', () => {
  assert.equal(maildirPlusName('Entwürfe'), '.Entw&APw-rfe');
  assert.equal(maildirPlusName('Archiv/Entwürfe'), '.Archiv.Entw&APw-rfe');
  assert.equal(maildirPlusName('Entwürfe', 'utf8'), '.Entwürfe');
  assert.equal(maildirPlusName('Archive/2024'), '.Archive.2024');
  // 150 bytes of UTF-8, 300 of modified UTF-7: too long for the disk only when encoded.
  const name = 'aé'.repeat(50);
  assert.equal(folderDiskName(name, 'utf8'), name);
  assert.throws(() => folderDiskName(name), FolderNameError);
});

test('fileinto a non-ASCII folder: the Maildir++ directory Dovecot would use, read back by Python', async () => {
  const t = await tempDir('postern-mutf7-');
  try {
    const local = new LocalDelivery(testConfig(t.dir), new DirSyncer());
    const req = { qid: 'QMUTF7', sender: 'a@example.net', receivedAt: Date.now(), user: 'alice@example.test', message: Buffer.from('Subject: draft\r\n\r\nbody\r\n'), checkExisting: false };
    await local.deliver({ ...req, folder: 'Entwürfe' });
    const root = join(t.dir, 'mail', 'example.test', 'alice');
    const [expected] = await dovecotMutf7(['Entwürfe']);
    assert.ok((await readdir(root)).includes(`.${expected}`), `the folder is .${expected}`);
    const read = readWithPython('maildir', root, expected);
    assert.equal(read.length, 1);
    assert.match(read[0]!.bytes.toString(), /Subject: draft/);
    assert.deepEqual(read[0]!.folders, [expected]);
    assert.equal(await local.folderExists('alice@example.test', 'Entwürfe'), true);
  } finally {
    await t.cleanup();
  }
});
