// Per-recipient copies (src/smtp/copies.ts): recipients grouped by their header edits, the shared
// message and the transaction id kept for those without edits, edits performed on a real
// HeaderEditor (pipeline/message.ts) in order.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMessage } from '../../../src/pipeline/message.js';
import type { HeaderEdit } from '../../../src/pipeline/verdict.js';
import { applyEdits, splitCopies } from '../../../src/smtp/copies.js';

const RAW = Buffer.from('Received: from x\r\nSubject: hi\r\nX-Drop: 1\r\n\r\nbody\r\n');
const render = (edits: HeaderEdit[]) => {
  const m = createMessage(RAW);
  applyEdits(m.headers, edits);
  return m.render();
};

describe('splitCopies', () => {
  it('one copy, the shared bytes, when nobody has edits of their own', () => {
    const rcpts = [{ address: 'a@x.test' }, { address: 'b@x.test' }];
    const c = splitCopies(rcpts, RAW, 'Q1', undefined, render, () => 'NEW');
    assert.equal(c.length, 1);
    assert.equal(c[0]!.id, 'Q1');
    assert.equal(c[0]!.bytes, RAW);
    assert.deepEqual(c[0]!.recipients, rcpts);
  });
  it('groups by edits; identical edits share a copy; ids are fresh after the first', () => {
    const rcpts = [{ address: 'A@x.test' }, { address: 'b@x.test' }, { address: 'c@x.test' }, { address: 'd@x.test' }];
    const mine: HeaderEdit[] = [{ op: 'add', name: 'X-For', value: 'a', where: 'top' }];
    const other: HeaderEdit[] = [{ op: 'remove', name: 'X-Drop' }, { op: 'add', name: 'X-For', value: 'c', where: 'bottom' }];
    let n = 0;
    const c = splitCopies(rcpts, RAW, 'Q1', { 'a@x.test': mine, 'c@x.test': other, 'd@x.test': mine }, render, () => `Q${++n + 1}`);
    assert.deepEqual(
      c.map((x) => [x.id, x.recipients.map((r) => r.address)]),
      [
        ['Q1', ['A@x.test', 'd@x.test']],
        ['Q2', ['b@x.test']],
        ['Q3', ['c@x.test']],
      ],
    );
    assert.equal(c[0]!.bytes.toString(), 'X-For: a\r\nReceived: from x\r\nSubject: hi\r\nX-Drop: 1\r\n\r\nbody\r\n');
    assert.equal(c[1]!.bytes, RAW);
    assert.equal(c[2]!.bytes.toString(), 'Received: from x\r\nSubject: hi\r\nX-For: c\r\n\r\nbody\r\n');
  });
});
