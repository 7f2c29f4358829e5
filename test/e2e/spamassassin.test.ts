// End to end with a real spamd: `postern start` with the spamassassin plugin (tag at 5, reject at
// 10) and a gateway Sieve script reading spamtest, messages sent with nodemailer. GTUBE is refused
// at DATA; a message scoring 6 (a local test rule) is delivered tagged, and Sieve saw its score;
// a clean one arrives with X-Spam-Status: No; spamd stopped → 451 4.3.0, nothing stored.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMaildir } from '../helpers/wait.js';
import { startAliceGateway, type AliceGateway } from '../helpers/alice-gateway.js';
import { GTUBE, SPAMMY_PHRASE, startSpamd, type RunningSpamd } from '../helpers/spamd.js';

// spamtest scales the score against sieve.spamtest.max (10). The local rule gives 6 points and
// SpamAssassin's ALL_TRUSTED takes 1 off (the message carries no Received field yet): 5 points →
// 1 + ceil(0.5 × 9) = 6. A clean message scores about 0 → 1.
const RULES = `require ["spamtest", "relational", "comparator-i;ascii-numeric", "editheader"];
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { addheader "X-Gateway-Spamtest" "high"; }
`;

describe('spamassassin end to end', () => {
  let spamd: RunningSpamd;
  let g: AliceGateway;
  const send = (subject: string, text: string) => g.send(subject, { text });
  const delivered = (subject: string) => g.delivered(subject);

  before(async () => {
    spamd = await startSpamd();
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-spamd-'));
    await mkdir(join(dir, 'rules'));
    await writeFile(join(dir, 'rules', 'gateway.sieve'), RULES);
    g = await startAliceGateway(
      // No trusted networks: the test client is an outside sender (trusted ones are not scanned).
      { relay: { networks: [] }, plugins: ['relay-acl', { spamassassin: { host: '127.0.0.1', port: spamd.port, tag_score: 5, reject_score: 10 } }, { sieve: { scripts: ['rules/gateway.sieve'] } }] },
      { dir },
    );
  });
  after(async () => {
    await g?.stop();
    await spamd?.close();
  });

  it('refuses GTUBE with 550 5.7.1', async () => {
    await assert.rejects(send('gtube', GTUBE), (e: { response?: string }) => {
      assert.equal(e.response, '550 5.7.1 Message refused as spam');
      return true;
    });
  });

  it('delivers a message scoring between tag and reject tagged, with the score seen by Sieve spamtest', async () => {
    await send('spammy', `Hello, ${SPAMMY_PHRASE} here.`);
    const m = await delivered('spammy');
    assert.ok(m);
    assert.match(m, /^X-Spam-Flag: YES$/m);
    assert.match(m, /^X-Spam-Status: Yes, score=\d+\.\d required=5\.0\s+tests=\S*POSTERN_TEST_SPAMMY/m);
    assert.match(m, /^X-Gateway-Spamtest: high$/m);
  });

  it('delivers a clean message with X-Spam-Status: No and X-Spam-Score', async () => {
    await send('lunch', 'See you at noon.');
    const m = await delivered('lunch');
    assert.ok(m);
    assert.match(m, /^X-Spam-Status: No, score=-?\d+\.\d required=5\.0/m);
    assert.match(m, /^X-Spam-Score: -?\d+\.\d$/m);
    assert.doesNotMatch(m, /X-Spam-Flag|X-Gateway-Spamtest/);
  });

  it('spamd stopped: 451 4.3.0 and nothing stored', async () => {
    await spamd.stop();
    try {
      await assert.rejects(send('while-down', 'Hello.'), (e: { response?: string }) => {
        assert.equal(e.response, '451 4.3.0 Policy check unavailable');
        return true;
      });
    } finally {
      await spamd.start();
    }
    await send('after-restart', 'Hello again.');
    assert.ok(await delivered('after-restart'));
    assert.ok(!(await readMaildir(g.d, 'alice')).some((x) => x.bytes.includes('Subject: while-down')));
  });
});
