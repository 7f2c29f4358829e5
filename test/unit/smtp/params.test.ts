// MAIL/RCPT parameter parsing (RFC 3461 xtext, NOTIFY, ORCPT, RET, ENVID; RFC 1870 SIZE).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeXtext, isXtext, leadingPath, parseMailParams, parseRcptParams } from '../../../src/smtp/params.js';

const o = { dsn: true, smtputf8: true };

test('xtext', () => {
  assert.ok(isXtext('abc+2B+3Ddef'));
  assert.ok(!isXtext('a+2b'));
  assert.ok(!isXtext('a=b'));
  assert.ok(!isXtext('a b'));
  assert.equal(decodeXtext('a+2Bb+3D'), 'a+b=');
});

const mailCases: [string, string | object][] = [
  ['MAIL FROM:<a@b>', {}],
  ['MAIL FROM:<a@b> SIZE=10 BODY=8bitmime SMTPUTF8 RET=full ENVID=x+2By', { size: 10, body: '8BITMIME', smtputf8: true, ret: 'FULL', envid: 'x+y' }],
  ['MAIL FROM:<> AUTH=<>', {}],
  ['MAIL FROM:<a@b> SIZE=1x', '501 5.5.4'],
  ['MAIL FROM:<a@b> SIZE', '501 5.5.4'],
  ['MAIL FROM:<a@b> BODY=BINARYMIME', '501 5.5.4'],
  ['MAIL FROM:<a@b> SMTPUTF8=yes', '501 5.5.4'],
  ['MAIL FROM:<a@b> RET=ALL', '501 5.5.4'],
  ['MAIL FROM:<a@b> ENVID=', '501 5.5.4'],
  ['MAIL FROM:<a@b> ENVID=+00', '501 5.5.4'],
  ['MAIL FROM:<a@b> RET=FULL RET=HDRS', '501 5.5.4'],
  ['MAIL FROM:<a@b> REQUIRETLS', '555 5.5.4'],
];

for (const [line, want] of mailCases) {
  test(`MAIL params: ${line}`, () => {
    const r = parseMailParams(line, o);
    if (typeof want === 'string') {
      assert.ok(!r.ok);
      assert.equal(`${r.reply.code} ${r.reply.enhanced}`, want);
    } else {
      assert.ok(r.ok);
      assert.deepEqual(r.value, want);
    }
  });
}

const rcptCases: [string, string | object][] = [
  ['RCPT TO:<a@b> NOTIFY=success,Delay', { notify: ['SUCCESS', 'DELAY'] }],
  ['RCPT TO:<a@b> NOTIFY=NEVER', { notify: ['NEVER'] }],
  ['RCPT TO:<a@b> ORCPT=rfc822;a+2Bb@c', { orcpt: 'rfc822;a+2Bb@c' }],
  ['RCPT TO:<a@b> NOTIFY=NEVER,FAILURE', '501 5.5.4'],
  ['RCPT TO:<a@b> NOTIFY=', '501 5.5.4'],
  ['RCPT TO:<a@b> ORCPT=;a@b', '501 5.5.4'],
  ['RCPT TO:<a@b> ORCPT=rfc822;', '501 5.5.4'],
  [`RCPT TO:<a@b> ORCPT=rfc822;${'a'.repeat(500)}`, '501 5.5.4'],
  ['RCPT TO:<a@b> FOO', '555 5.5.4'],
];

for (const [line, want] of rcptCases) {
  test(`RCPT params: ${line.slice(0, 60)}`, () => {
    const r = parseRcptParams(line, { dsn: true });
    if (typeof want === 'string') {
      assert.ok(!r.ok);
      assert.equal(`${r.reply.code} ${r.reply.enhanced}`, want);
    } else {
      assert.ok(r.ok);
      assert.deepEqual(r.value, want);
    }
  });
}

test('DSN parameters are unsupported (555) when DSN is off', () => {
  const r = parseRcptParams('RCPT TO:<a@b> NOTIFY=NEVER', { dsn: false });
  assert.ok(!r.ok && r.reply.code === 555);
});

test('leadingPath: the path ends at the first ">" outside quotes; spaces only inside them', () => {
  const cases: [string, { path: string; after: string } | null][] = [
    ['<a@b.example> SIZE=1', { path: '<a@b.example>', after: ' SIZE=1' }],
    ['<>', { path: '<>', after: '' }],
    ['<"john smith"@b.example> BODY=8BITMIME', { path: '<"john smith"@b.example>', after: ' BODY=8BITMIME' }],
    ['<"a>b \\" c"@b.example>', { path: '<"a>b \\" c"@b.example>', after: '' }],
    ['<@r.example:"x y"@b.example>', { path: '<@r.example:"x y"@b.example>', after: '' }],
    ['<a b@b.example>', null],
    ['<"unterminated@b.example>', null],
    ['<a@b.example>SIZE=1', null],
    ['<a<b@b.example>', null],
    ['a@b.example', null],
  ];
  for (const [input, want] of cases) assert.deepEqual(leadingPath(input), want, input);
});
