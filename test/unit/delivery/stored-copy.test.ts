import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyIdentity } from '../../../src/delivery/stored-copy.js';

test('a Maildir copy keeps its identity when a reader moves it to cur/ and flags it; another folder or message is another copy', () => {
  const name = '1700000000.M123000QABCDR0123456789abcdef.mx\\054host,S=2048';
  const id = copyIdentity({ kind: 'maildir', file: `/m/alice/new/${name}` });
  assert.equal(copyIdentity({ kind: 'maildir', file: `/m/alice/cur/${name}:2,S` }), id);
  assert.equal(copyIdentity({ kind: 'maildir', file: `/m/alice/cur/${name},W=2100:2,RS`, found: true }), id);
  assert.notEqual(copyIdentity({ kind: 'maildir', file: `/m/alice/.Work/new/${name}` }), id);
  assert.notEqual(copyIdentity({ kind: 'maildir', file: `/m/alice/new/${name.replace('ABCD', 'ABCE')}` }), id);
});

test('an mbox copy is its file and offset', () => {
  const entry = Buffer.from('From a@b Thu Jan  4 05:06:07 2024\n\n');
  assert.equal(copyIdentity({ kind: 'mbox', file: '/m/alice', offset: 10, entry }), copyIdentity({ kind: 'mbox', file: '/m/alice', offset: 10, entry, found: true }));
  assert.notEqual(copyIdentity({ kind: 'mbox', file: '/m/alice', offset: 10, entry }), copyIdentity({ kind: 'mbox', file: '/m/alice', offset: 0, entry }));
});
