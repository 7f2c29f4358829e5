// The reply catalogue: every entry's enhanced code has the reply code's class (RFC 3463 §2), and
// the adapter's table for smtp-server's own replies yields class-consistent codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classMatches, enhancedForLibraryReply, Replies, replyFromVerdict, SmtpReply } from '../../../src/smtp/replies.js';
import { StoreUnavailableError } from '../../../src/store/errors.js';

test('every Replies entry: code class = enhanced class, one line, message starts with the enhanced code', () => {
  const entries = Object.entries(Replies);
  assert.ok(entries.length > 20);
  for (const [name, make] of entries) {
    const r = (make as (...a: string[]) => SmtpReply)('x');
    assert.ok(r instanceof SmtpReply, name);
    assert.equal(String(r.code)[0], r.enhanced[0], `${name}: ${r.code} ${r.enhanced}`);
    assert.equal(r.responseCode, r.code);
    assert.equal(r.message, `${r.enhanced} ${r.text}`);
    assert.doesNotMatch(r.text, /[\r\n]/);
  }
});

test('an unexpected failure: a store that could not answer reads as a temporary lookup failure, anything else as an internal error', () => {
  const lookup = Replies.internalError(new StoreUnavailableError('redis down'));
  assert.deepEqual([lookup.code, lookup.enhanced, lookup.text], [451, '4.3.0', 'Temporary lookup failure, try again later']);
  assert.ok(lookup.opts.cause instanceof StoreUnavailableError, 'the detail stays with the reply, for the log');
  const other = Replies.internalError(new Error('bug'));
  assert.deepEqual([other.code, other.enhanced, other.text], [451, '4.3.0', 'Internal error, try again later']);
  assert.doesNotMatch(lookup.message + other.message, /redis|bug/, 'the client never sees the detail');
});

test('SmtpReply refuses a class mismatch, a 3yz code and a multi-line text', () => {
  assert.throws(() => new SmtpReply(550, '4.1.1', 'x'), RangeError);
  assert.throws(() => new SmtpReply(354, '2.0.0', 'x'), RangeError);
  assert.throws(() => new SmtpReply(550, '5.1.1', 'a\r\nb'), RangeError);
});

test('replyFromVerdict keeps a consistent plugin reply and repairs an inconsistent one', () => {
  assert.equal(replyFromVerdict({ kind: 'reject', code: 550, enhanced: '5.7.1', text: 'No' }).toString(), '550 5.7.1 No');
  assert.equal(replyFromVerdict({ kind: 'reject', code: 451, enhanced: '4.7.1', text: 'No' }).toString(), '550 5.7.1 No');
  assert.equal(replyFromVerdict({ kind: 'tempfail', code: 451, enhanced: '5.7.1', text: 'Later' }).toString(), '451 4.3.0 Later');
  assert.equal(replyFromVerdict({ kind: 'tempfail', code: 421, enhanced: '4.7.0', text: 'Bye', disconnect: true }).disconnect, true);
  assert.equal(replyFromVerdict({ kind: 'reject', code: 550, enhanced: '5.7.1', text: 'evil\r\n250 ok' }).text, 'Rejected by policy');
});

const LIBRARY_CASES: [number, string, string][] = [
  [421, 'Timeout - closing connection', '4.4.2'],
  [421, 'Error: Command line too long', '4.5.2'],
  [501, 'Error: Bad sender address syntax', '5.1.7'],
  [501, 'Error: Bad recipient address syntax', '5.1.3'],
  [538, 'Error: Must issue a STARTTLS command first', '5.7.11'],
  [552, 'Error: message exceeds fixed maximum message size 10', '5.3.4'],
  [452, 'Error: too many recipients', '4.5.3'],
  [503, 'Error: need MAIL command', '5.5.1'],
  [501, 'Authentication aborted', '5.7.0'],
  [501, 'Error: invalid userdata', '5.5.2'],
  [221, 'Bye', '2.0.0'],
  [250, 'Flushed', '2.0.0'],
  [599, 'Something new', '5.0.0'],
  [499, 'Something new', '4.0.0'],
];

test('enhanced codes for smtp-server replies', () => {
  for (const [code, text, want] of LIBRARY_CASES) {
    assert.equal(enhancedForLibraryReply(code, text), want, text);
    assert.ok(classMatches(code, enhancedForLibraryReply(code, text)));
  }
  // The library's context guess is used only when it has the right class.
  assert.equal(enhancedForLibraryReply(250, 'Accepted', '2.1.5'), '2.1.5');
  assert.equal(enhancedForLibraryReply(550, 'Other', '4.1.1'), '5.7.1');
});
