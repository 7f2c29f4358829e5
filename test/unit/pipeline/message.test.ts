// The message view plugins edit: byte-exact rendering of untouched headers, edits, lazy parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMessage } from '../../../src/pipeline/message.js';

const crlf = (s: string) => Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'utf8');

const RAW = crlf(
  [
    'Received: from a.example (a.example [192.0.2.1])',
    '\tby mx.example.test; Mon, 1 Jan 2024 00:00:00 +0000',
    'From:   "Ann" <ann@a.example>  ',
    'To: bob@example.test',
    'Subject: =?UTF-8?Q?caf=C3=A9?= and',
    '  a folded   tail',
    'X-Tag: one',
    'x-tag: two',
    'X-Utf8: naïve',
    '',
    'Body line 1',
    '',
    '..not unstuffed here, just bytes',
    '',
  ].join('\n'),
);

test('unchanged message renders byte-identical (same buffer)', () => {
  const m = createMessage(RAW);
  assert.equal(m.size, RAW.length);
  assert.ok(m.render().equals(RAW));
  assert.equal(m.edited, false);
});

test('list/get unfold values; names match case-insensitively', () => {
  const m = createMessage(RAW);
  assert.deepEqual(m.headers.get('subject'), ['=?UTF-8?Q?caf=C3=A9?= and  a folded   tail']);
  assert.deepEqual(m.headers.get('X-TAG'), ['one', 'two']);
  assert.deepEqual(m.headers.get('From'), ['"Ann" <ann@a.example>']);
  assert.deepEqual(m.headers.get('x-utf8'), ['naïve']);
  assert.deepEqual(
    m.headers.list().map(([n]) => n),
    ['Received', 'From', 'To', 'Subject', 'X-Tag', 'x-tag', 'X-Utf8'],
  );
  assert.deepEqual(m.headers.get('Received'), ['from a.example (a.example [192.0.2.1])\tby mx.example.test; Mon, 1 Jan 2024 00:00:00 +0000']);
});

test('add top/bottom and remove keep every other field byte-exact', () => {
  const m = createMessage(RAW);
  m.headers.add('X-Spam-Score', '3.5');
  m.headers.add('X-Last', 'end', 'bottom');
  assert.equal(m.headers.remove('x-tag', 0), 1);
  const out = m.render().toString('utf8');
  const original = RAW.toString('utf8');
  const expected =
    'X-Spam-Score: 3.5\r\n' +
    original.replace('X-Tag: one\r\n', '').replace('X-Utf8: naïve\r\n', 'X-Utf8: naïve\r\nX-Last: end\r\n');
  assert.equal(out, expected);
  assert.deepEqual(m.headers.get('x-tag'), ['two']);
  assert.equal(m.edited, true);
  // raw() stays the bytes as received.
  return m.raw().then((r) => assert.ok(r.equals(RAW)));
});

test('remove all occurrences, and a missing name removes nothing', () => {
  const m = createMessage(RAW);
  assert.equal(m.headers.remove('X-Tag'), 2);
  assert.equal(m.headers.remove('X-Nope'), 0);
  assert.equal(m.headers.remove('Subject', 3), 0);
  assert.ok(!m.render().toString().includes('X-Tag'));
  assert.ok(m.render().toString().includes('Subject: =?UTF-8?Q?caf=C3=A9?= and\r\n  a folded   tail\r\n'));
});

test('add refuses header injection and bad names; folds long values', () => {
  const m = createMessage(RAW);
  assert.throws(() => m.headers.add('X-Evil', 'a\r\nBcc: victim@example.test'), TypeError);
  assert.throws(() => m.headers.add('X Evil', 'a'), TypeError);
  assert.throws(() => m.headers.add('X:Evil', 'a'), TypeError);
  assert.throws(() => m.headers.add('', 'a'), TypeError);
  const long = Array.from({ length: 30 }, (_, i) => `word${i}`).join(' ');
  m.headers.add('X-Long', long);
  const lines = m.render().toString().split('\r\n');
  const idx = lines.findIndex((l) => l.startsWith('X-Long:'));
  assert.ok(lines[idx]!.length <= 78 && lines[idx + 1]!.startsWith(' '), 'folded at white space');
  assert.deepEqual(m.headers.get('x-long'), [long]);
  // The folded field reads back unfolded when parsed again.
  const again = createMessage(m.render());
  assert.deepEqual(again.headers.get('X-Long'), [long]);
});

test('edge shapes: no body, no headers, bare LF input', () => {
  const headersOnly = crlf('Subject: x\n');
  const a = createMessage(headersOnly);
  assert.deepEqual(a.headers.get('subject'), ['x']);
  a.headers.add('X-A', '1', 'bottom');
  assert.equal(a.render().toString(), 'Subject: x\r\nX-A: 1\r\n');

  const noHeaders = crlf('\nbody only\n');
  const b = createMessage(noHeaders);
  assert.deepEqual(b.headers.list(), []);
  b.headers.add('X-B', '2');
  assert.equal(b.render().toString(), 'X-B: 2\r\n\r\nbody only\r\n');

  const lf = Buffer.from('Subject: lf\nTo: a@b\n\nbody\n');
  const c = createMessage(lf);
  assert.deepEqual(c.headers.get('to'), ['a@b']);
  c.headers.remove('To');
  assert.equal(c.render().toString(), 'Subject: lf\n\nbody\n');
});

test('a junk line in the header block is kept but not listed', () => {
  const raw = crlf('From nobody Mon Jan 1\nSubject: s\n\nb\n');
  const m = createMessage(raw);
  assert.deepEqual(m.headers.list(), [['Subject', 's']]);
  m.headers.add('X-New', 'v', 'bottom');
  assert.equal(m.render().toString(), 'From nobody Mon Jan 1\r\nSubject: s\r\nX-New: v\r\n\r\nb\r\n');
});

test('parsed() runs mailparser once and shares the result', async () => {
  const m = createMessage(RAW);
  const p1 = await m.parsed();
  const p2 = await m.parsed();
  assert.equal(p1, p2);
  assert.match(p1.subject ?? '', /^café and +a folded +tail$/);
  assert.match(p1.text ?? '', /Body line 1/);
});

test('the header block ends at the first empty line, whatever mix of CRLF, bare LF and bare CR surrounds it', () => {
  // The RFC 5322 §2.1 split, written as plainly as possible: the first "\n" or "\r\n" at the
  // start or right after a "\n".
  const expectedNames = (raw: Buffer): string[] => {
    const text = raw.toString('latin1');
    const m = /(^|\n)(\r?\n)/.exec(text);
    const block = m ? text.slice(0, m.index + m[1]!.length) : text;
    return (block.match(/[^\n]*\n|[^\n]+$/g) ?? []).filter((l) => /^[!-9;-~]+:/.test(l)).map((l) => l.slice(0, l.indexOf(':')));
  };
  const eols = ['\r\n', '\n', '\r'];
  let seed = 7;
  const pick = <T>(xs: T[]): T => xs[(seed = (seed * 1103515245 + 12345) % 2 ** 31) % xs.length]!;
  for (let round = 0; round < 400; round++) {
    const parts: string[] = [];
    const n = pick([0, 1, 2, 3, 5]);
    for (let i = 0; i < n; i++) parts.push(`H${i}: v${i}${pick(eols)}`);
    if (pick([true, false])) parts.push(pick(['\r\n', '\n', '\r', '']));
    for (let i = 0; i < pick([0, 1, 3]); i++) parts.push(`X-Body${i}: not a header${pick(eols)}${pick(['', '\r\n', '\n'])}`);
    const raw = Buffer.from(parts.join(''), 'latin1');
    const m = createMessage(raw);
    assert.deepEqual(m.headers.list().map(([name]) => name), expectedNames(raw), JSON.stringify(raw.toString('latin1')));
    assert.ok(m.render().equals(raw), 'unchanged: the same bytes');
  }
});
