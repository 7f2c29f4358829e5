import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { crlfToLf, deliveredBytes, traceHeaders } from '../../../src/delivery/trace.js';

const cases: [string, string][] = [
  ['', ''],
  ['no line end', 'no line end'],
  ['a\r\nb\r\n', 'a\nb\n'],
  ['\r\n\r\n', '\n\n'],
  ['bare\rcr\r\n', 'bare\rcr\n'],
  ['bare\nlf\r\n', 'bare\nlf\n'],
  ['\r\r\n', '\r\n'],
  ['end\r', 'end\r'],
];

test('crlfToLf', () => {
  for (const [input, want] of cases) assert.equal(crlfToLf(Buffer.from(input, 'latin1')).toString('latin1'), want, JSON.stringify(input));
});

test('crlfToLf equals a plain replace on any bytes', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('\r', '\n', 'a', '\r\n', 'From ', '\x00', '\xff')), (parts) => {
      const s = parts.join('');
      assert.equal(crlfToLf(Buffer.from(s, 'latin1')).toString('latin1'), s.replace(/\r\n/g, '\n'));
    }),
  );
});

test('trace headers: Return-Path (RFC 5321 §4.4), null sender, Delivered-To', () => {
  assert.equal(traceHeaders('a@example.net', 'b@example.test'), 'Return-Path: <a@example.net>\nDelivered-To: b@example.test\n');
  assert.equal(traceHeaders('', 'b@example.test'), 'Return-Path: <>\nDelivered-To: b@example.test\n');
  // A CR or LF smuggled into an address cannot start a header of its own.
  assert.equal(traceHeaders('a@x\r\nBcc: evil', 'b@example.test').split('\n').length, 3);
});

test('delivered bytes are trace headers plus the message with LF endings', () => {
  const msg = Buffer.from('Subject: hi\r\n\r\nbody\r\n');
  assert.equal(deliveredBytes('a@example.net', 'b@example.test', msg).toString(), 'Return-Path: <a@example.net>\nDelivered-To: b@example.test\nSubject: hi\n\nbody\n');
});
