import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { MboxWriter, mboxEntry } from '../../../src/delivery/mbox.js';
import { HEAD_BYTES, parseStandaloneIntent, repairTornEntry, standaloneIntent, type RepairOutcome } from '../../../src/delivery/mbox-intent.js';
import { tempDir } from '../queue/helpers.js';
import { readWithPython } from './python.js';
import { failFolderSyncs } from '../queue/folder-sync-faults.js';
import { DeliveryError } from '../../../src/delivery/errors.js';

const T = Date.UTC(2024, 0, 4, 5, 6, 7);
const before = mboxEntry('a@example.net', T, Buffer.from('Subject: before\n\nbody before\n'));
// Longer than the record keeps, with lines that mboxrd quotes.
const ours = mboxEntry('b@example.net', T, Buffer.from(`Received: from x by mx.example.test with LMTP id 01HZZZZZZZ0000000X\nSubject: ours\n\nFrom the start\n${'line of ours\n'.repeat(200)}end\n`));
const other = mboxEntry('c@example.net', T, Buffer.from('Subject: other\n\nshort\n'));
/** The torn entry cut right after a line end: another writer's From_ line would then start a line. */
const atLineEnd = ours.indexOf('\n', 1500) + 1;

const cases: { name: string; file: Buffer; outcome: RepairOutcome; after: Buffer }[] = [
  { name: 'torn inside its From_ line', file: Buffer.concat([before, ours.subarray(0, 3)]), outcome: 'truncated', after: before },
  { name: 'torn inside the bytes the record keeps', file: Buffer.concat([before, ours.subarray(0, 600)]), outcome: 'truncated', after: before },
  { name: 'torn past them', file: Buffer.concat([before, ours.subarray(0, ours.length - 1)]), outcome: 'truncated', after: before },
  { name: 'no byte of it written', file: before, outcome: 'absent', after: before },
  { name: 'complete', file: Buffer.concat([before, ours]), outcome: 'complete', after: Buffer.concat([before, ours]) },
  { name: 'complete, others after it', file: Buffer.concat([before, ours, other]), outcome: 'complete', after: Buffer.concat([before, ours, other]) },
  {
    // A mail reader marked the first message read: what is at the offset now is not ours.
    name: 'rewritten by a mail reader since',
    file: Buffer.concat([Buffer.from(before.toString().replace('Subject: before\n', 'Subject: before\nStatus: RO\n')), ours.subarray(0, 900)]),
    outcome: 'changed',
    after: Buffer.concat([Buffer.from(before.toString().replace('Subject: before\n', 'Subject: before\nStatus: RO\n')), ours.subarray(0, 900)]),
  },
  {
    // Another program appended while we were down; the file still ends before our entry would.
    name: 'another entry after the torn one',
    file: Buffer.concat([before, ours.subarray(0, atLineEnd), other]),
    outcome: 'changed',
    after: Buffer.concat([before, ours.subarray(0, atLineEnd), other]),
  },
  { name: 'the mailbox emptied since', file: Buffer.alloc(0), outcome: 'absent', after: Buffer.alloc(0) },
];

for (const c of cases) {
  test(`standalone mbox intent, ${c.name}: ${c.outcome}`, async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'box');
      await writeFile(path, c.file);
      const rec = parseStandaloneIntent(JSON.parse(JSON.stringify(standaloneIntent(path, ours, { offset: before.length, length: ours.length }))));
      assert.ok(rec);
      assert.equal(await repairTornEntry(new MboxWriter(new DirSyncer()), rec), c.outcome);
      assert.deepEqual(await readFile(path), c.after);
      if (c.outcome === 'truncated') assert.deepEqual(readWithPython('mbox', path).map((m) => m.bytes.toString()), ['Subject: before\n\nbody before\n']);
    } finally {
      await cleanup();
    }
  });
}

test('standalone mbox intent: a mailbox that is gone is not created', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const rec = parseStandaloneIntent(standaloneIntent(path, ours, { offset: 0, length: ours.length }))!;
    assert.equal(await repairTornEntry(new MboxWriter(new DirSyncer()), rec), 'absent');
    await assert.rejects(stat(path), { code: 'ENOENT' });
  } finally {
    await cleanup();
  }
});

test('standalone mbox intent: the record keeps the file and the first bytes; other records are not standalone', () => {
  const rec = standaloneIntent('/var/mail/b', ours, { offset: 10, length: ours.length });
  assert.deepEqual(Buffer.from(rec.head, 'base64'), ours.subarray(0, HEAD_BYTES));
  assert.deepEqual(parseStandaloneIntent(rec), { file: '/var/mail/b', offset: 10, length: ours.length, head: ours.subarray(0, HEAD_BYTES) });
  const bad: unknown[] = [
    null,
    'x',
    { offset: 10, length: 20 }, // a spooled delivery's record
    { ...rec, file: 'relative/b' },
    { ...rec, offset: -1 },
    { ...rec, length: 0 },
    { ...rec, head: Buffer.from('Subject: x').toString('base64') },
    { ...rec, length: 3 }, // shorter than the bytes kept
  ];
  for (const b of bad) assert.equal(parseStandaloneIntent(b), null, JSON.stringify(b));
});

// A torn entry that ends mid-line, then one of our complete appends (the record's check failed
// at start, so the tail was not cut yet): the append ends the torn line first, so its From_ line
// starts a line, the check sees another entry, and the complete message is not cut off.
test('standalone mbox intent: a complete append after a tail torn mid-line is never cut off with it', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const midLine = ours.indexOf('\n', 1500) - 3;
    await writeFile(path, Buffer.concat([before, ours.subarray(0, midLine)]));
    const rec = parseStandaloneIntent(standaloneIntent(path, ours, { offset: before.length, length: ours.length }))!;
    const writer = new MboxWriter(new DirSyncer());
    await writer.deliver(path, undefined, other);
    assert.ok((await stat(path)).size < before.length + ours.length, 'the file still ends before our whole entry would');
    assert.equal(await repairTornEntry(writer, rec), 'changed');
    const read = readWithPython('mbox', path).map((m) => m.bytes.toString());
    assert.equal(read.at(-1), 'Subject: other\n\nshort\n', 'the later message is whole and a message of its own');
  } finally {
    await cleanup();
  }
});

// A new mbox whose folder cannot be fsynced after the entry is in it: a temporary failure that
// says the copy is stored (as for Maildir), and the retry under the same queue id finds it
// through its intent record instead of appending a second copy.
test('a new mbox whose folder fsync fails: stored, and the retry counts the entry once', async () => {
  const { dir, cleanup } = await tempDir();
  const fault = failFolderSyncs(dir);
  try {
    const path = join(dir, 'box');
    let record: { offset: number; length: number } | null = null;
    const intent = { get: async () => record, put: async (r: { offset: number; length: number }) => void (record = r) };
    const syncer = new DirSyncer();
    const writer = new MboxWriter(syncer);
    await assert.rejects(writer.deliver(path, undefined, other, { intent }), (e: unknown) => e instanceof DeliveryError && e.temporary && e.stored);
    assert.ok(fault.failed >= 1);
    fault.heal();
    const syncs = syncer.syncs;
    const again = await writer.deliver(path, undefined, other, { intent, checkExisting: true });
    assert.equal(again.duplicate, true);
    assert.ok(syncer.syncs > syncs, 'the retry made the name durable before counting the entry');
    assert.deepEqual(readWithPython('mbox', path).map((m) => m.bytes.toString()), ['Subject: other\n\nshort\n']);
  } finally {
    fault.restore();
    await cleanup();
  }
});

test('a new mbox whose folder fsync failed: the next append to it, from another delivery, fsyncs the folder before it counts', async () => {
  const { dir, cleanup } = await tempDir();
  const fault = failFolderSyncs(dir);
  try {
    const path = join(dir, 'box');
    const syncer = new DirSyncer();
    const writer = new MboxWriter(syncer);
    await assert.rejects(writer.deliver(path, undefined, other), (e: unknown) => e instanceof DeliveryError && e.stored);
    // Still failing: the second append is in the file, but its name is not durable either.
    await assert.rejects(writer.deliver(path, undefined, before), (e: unknown) => e instanceof DeliveryError && e.stored);
    fault.heal();
    const syncs = syncer.syncs;
    await writer.deliver(path, undefined, mboxEntry('d@example.net', T, Buffer.from('Subject: third\n\nthird\n')));
    assert.ok(syncer.syncs > syncs);
  } finally {
    fault.restore();
    await cleanup();
  }
});

// An append that fails after it ended a torn line (here: its intent record cannot be written)
// puts the file back to its exact size, so the torn entry's own check still recognises it.
test('standalone mbox intent: an append that fails after ending a torn line leaves the torn entry as it was, and it is cut off at start', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const torn = Buffer.concat([before, ours.subarray(0, 600)]);
    await writeFile(path, torn);
    const writer = new MboxWriter(new DirSyncer());
    const failing = { get: async () => null, put: async () => Promise.reject(new Error('EIO: intent record')) };
    await assert.rejects(writer.deliver(path, undefined, other, { intent: failing }));
    assert.deepEqual(await readFile(path), torn);
    const rec = parseStandaloneIntent(standaloneIntent(path, ours, { offset: before.length, length: ours.length }))!;
    assert.equal(await repairTornEntry(writer, rec), 'truncated');
    assert.deepEqual(await readFile(path), before);
  } finally {
    await cleanup();
  }
});
