// RFC 3464 report construction and the NOTIFY rules (RFC 3461 §4.1), table-driven.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn, countReceived, decodeXtext, dsnNeedsSmtputf8, wants } from '../../../src/queue/dsn.js';
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

test('UTF-8 addresses (RFC 6533): the To: header and the report keep them as UTF-8, the status part is global; an ASCII DSN is unchanged', () => {
  const env = { ...envelope('jörg@x.test', ['jöran@far.test']), smtputf8: true };
  const out = buildDsn({
    reportingMta: 'mx.example.test',
    queueId: 'Q1',
    envelope: env,
    message: Buffer.from('Subject: hi\r\n\r\nbody\r\n'),
    recipients: [{ rcpt: 'jöran@far.test', final: 'jöran@far.test', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 nöpe' }],
  });
  const text = out.toString('utf8');
  assert.ok(out.includes(Buffer.from('To: <jörg@x.test>\r\n', 'utf8')), 'the To: header is UTF-8');
  assert.doesNotMatch(text, /\uFFFD/, 'no byte is invalid UTF-8');
  assert.match(text, /^Final-Recipient: utf-8; jöran@far\.test$/m);
  assert.match(text, /^<jöran@far\.test>: failed: 550 5\.1\.1 n\?pe$/m, 'a remote diagnostic stays ASCII');
  assert.match(text, /^Content-Type: message\/global-delivery-status$/m);
  assert.match(text, /^Content-Type: multipart\/report; report-type=global-delivery-status;/m);
  assert.match(text, /^Content-Type: message\/global$/m, 'the original, sent with SMTPUTF8');
  assert.match(text, /^Content-Type: text\/plain; charset=utf-8$/m);
  assert.equal(dsnNeedsSmtputf8(env, [{ final: 'jöran@far.test' }]), true);
  assert.equal(dsnNeedsSmtputf8({ ...envelope('s@example.net', ['x@far.test']) }, [{ final: 'x@far.test' }]), false);
  assert.equal(dsnNeedsSmtputf8({ ...envelope('s@example.net', ['x@far.test']), smtputf8: true }, [{ final: 'x@far.test' }]), true, 'the returned message was sent with SMTPUTF8');

  const ascii = buildDsn({
    reportingMta: 'mx.example.test',
    queueId: 'Q2',
    envelope: envelope('s@example.net', ['x@far.test']),
    message: Buffer.from('Subject: hi\r\n\r\nbody\r\n'),
    recipients: [{ rcpt: 'x@far.test', final: 'x@far.test', action: 'failed', status: '5.1.1' }],
  }).toString('latin1');
  assert.match(ascii, /^Content-Type: message\/delivery-status$/m);
  assert.match(ascii, /^Final-Recipient: rfc822; x@far\.test$/m);
  assert.match(ascii, /^Content-Type: text\/plain; charset=us-ascii$/m);
  assert.doesNotMatch(ascii, /Content-Transfer-Encoding/);
});
