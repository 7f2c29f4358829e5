// LMTP's replies after the final dot (answerEachRcpt, src/smtp/session.ts): one per accepted RCPT
// in RCPT order, a repeat answered with its recipient's reply (RFC 2033 §4.2).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answerEachRcpt } from '../../../src/smtp/session.js';
import { Replies, SmtpReply } from '../../../src/smtp/replies.js';

const full = new SmtpReply(552, '5.2.2', 'Mailbox full');

describe('answerEachRcpt', () => {
  const cases: { name: string; reply: SmtpReply | string | (string | Error)[]; keys: string[]; answers: string[]; want: (string | Error)[] }[] = [
    { name: 'one reply per recipient, no repeats', reply: ['ok a', full], keys: ['a', 'b'], answers: ['a', 'b'], want: ['ok a', full] },
    { name: 'repeats hear the reply of their recipient, in RCPT order', reply: ['ok a', full], keys: ['a', 'b'], answers: ['a', 'a', 'b', 'a', 'b'], want: ['ok a', 'ok a', full, 'ok a', full] },
    { name: 'one reply for the message is given to every RCPT', reply: full, keys: ['a', 'b'], answers: ['a', 'b', 'a'], want: [full, full, full] },
    { name: 'a success string too', reply: 'queued', keys: ['a'], answers: ['a', 'a'], want: ['queued', 'queued'] },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(answerEachRcpt(c.reply, c.keys, c.answers), c.want));

  it('a recipient the list leaves out hears 451, never a default 250', () => {
    const out = answerEachRcpt(['ok a'], ['a', 'b'], ['a', 'b', 'b']);
    assert.equal(out[0], 'ok a');
    for (const r of out.slice(1)) {
      assert.ok(r instanceof SmtpReply);
      assert.equal(r.toString(), Replies.internalError().toString());
    }
  });
});
