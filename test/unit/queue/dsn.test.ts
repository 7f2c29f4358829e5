// RFC 3464 report construction and the NOTIFY rules (RFC 3461 §4.1), table-driven.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn, countReceived, decodeXtext, wants } from '../../../src/queue/dsn.js';
import { envelope } from './helpers.js';

test('NOTIFY: absent means FAILURE and DELAY; NEVER means nothing', () => {
  const cases: [string[] | undefined, string, boolean][] = [
    [undefined, 'FAILURE', true],
    [undefined, 'DELAY', true],
    [undefined, 'SUCCESS', false],
    [['NEVER'], 'FAILURE', false],
    [['SUCCESS'], 'SUCCESS', true],
    [['SUCCESS'], 'FAILURE', false],
    [['FAILURE', 'DELAY'], 'DELAY', true],
  ];
  for (const [notify, kind, want] of cases) {
    assert.equal(wants({ address: 'a@b', ...(notify ? { notify: notify as never } : {}) }, kind as 'FAILURE'), want, `${notify} ${kind}`);
  }
});

test('RET=HDRS returns the header only, as text/rfc822-headers; ORCPT is xtext-decoded', () => {
  const env = { ...envelope('s@example.net', ['x@far.test']), ret: 'HDRS' as const, envid: 'E1' };
  const msg = Buffer.from('Subject: hi\r\nX-A: 1\r\n\r\nsecret body\r\n');
  const out = buildDsn({
    reportingMta: 'mx.example.test',
    queueId: '01M8F8W6T7PBYJ9RGJ',
    envelope: env,
    message: msg,
    recipients: [{ rcpt: 'x@far.test', final: 'x@far.test', orcpt: 'rfc822;x+2Bt@far.test', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 nope' }],
  }).toString();
  assert.match(out, /^Content-Type: multipart\/report; report-type=delivery-status;/m);
  assert.match(out, /^Content-Type: text\/rfc822-headers$/m);
  assert.doesNotMatch(out, /secret body/);
  assert.match(out, /^Original-Recipient: rfc822; x\+t@far\.test$/m);
  assert.match(out, /^Original-Envelope-Id: E1$/m);
  assert.match(out, /^Diagnostic-Code: smtp; 550 5\.1\.1 nope$/m);
  assert.match(out, /^Auto-Submitted: auto-replied$/m);
  assert.ok(!/[^\r]\n/.test(out), 'CRLF line ends only');
});

test('Received counting and xtext decoding', () => {
  assert.equal(countReceived(Buffer.from('Received: a\r\nreceived: b\r\n\tfolded\r\nSubject: x\r\n\r\nReceived: in body\r\n')), 2);
  assert.equal(decodeXtext('a+2Bb+3Dc'), 'a+b=c');
});
