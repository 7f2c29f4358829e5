// spamassassin against a real spamd (Debian spamassassin) started by the test with the packaged
// rules and no network tests (test/helpers/spamd.ts): GTUBE tagged / quarantined / rejected per
// threshold, clean mail passing with X-Spam headers, every spamd command, the unix socket,
// max_size, forged headers, spamtest results, the failure policy and option errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import plugin from './index.js';
import { parseSpamdReply } from './spamd.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';
import { GTUBE, SPAMMY_PHRASE, startSpamd, type RunningSpamd } from '../../test/helpers/spamd.js';

let spamd: RunningSpamd;
before(async () => {
  spamd = await startSpamd();
});
after(async () => {
  await spamd?.close();
});

const msg = (body: string, extra = '') =>
  `${extra}From: a@sender.test\nTo: rcpt@example.test\nSubject: test\nMessage-ID: <m1@sender.test>\nDate: Fri, 27 Nov 2026 10:00:00 +0000\n\n${body}\n`;
const SPAM = msg(GTUBE);
const SPAMMY = msg(`Hello, ${SPAMMY_PHRASE} inside.`);

test('spamd replies are parsed; bad ones are errors with the reason', () => {
  const ok = parseSpamdReply('SYMBOLS', Buffer.from('SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: True ; 1000.3 / 5.0\r\n\r\nGTUBE,OTHER'));
  assert.deepEqual(ok, { spam: true, score: 1000.3, required: 5, symbols: ['GTUBE', 'OTHER'] });
  assert.deepEqual(parseSpamdReply('CHECK', Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.5 / 5.0\r\n\r\n')), { spam: false, score: -1.5, required: 5, symbols: [] });
  const bad: [string, RegExp][] = [
    ['SPAMD/1.0 76 Bad header line: x\r\n\r\n', /spamd error 76: Bad header line/],
    ['HTTP/1.1 400 Bad Request\r\n\r\n', /not a spamd reply/],
    ['SPAMD/1.1 0 EX_OK\r\n\r\n', /without a valid Spam header/],
    ['SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 9 / 5\r\n\r\nGTUBE', /cut short: 5 of 50/],
  ];
  for (const [reply, re] of bad) assert.throws(() => parseSpamdReply('SYMBOLS', Buffer.from(reply)), re);
});

test('GTUBE: rejected at DATA with 550 5.7.1 above reject_score; the trace names the score and rules', async () => {
  const h = testPlugin(plugin, { port: spamd.port, tag_score: 5, reject_score: 10 });
  const r = await h.run('data', { message: SPAM });
  assert.deepEqual(r.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Message refused as spam' });
  assert.match(r.trace[0]!.detail ?? '', /^score 100\d\.\d\/5\.0 \(.*GTUBE.*\), spamd 127\.0\.0\.1:\d+, \d+ms$/);
  await h.close();
});

test('GTUBE without reject_score: tagged, with X-Spam-Flag, -Status, -Score; spamtest gets the score', async () => {
  const h = testPlugin(plugin, { port: spamd.port, tag_score: 5 });
  const r = await h.run('data', { message: SPAM });
  assert.equal(r.verdict.kind, 'next');
  const hd = r.message!.headers;
  assert.deepEqual(hd.get('X-Spam-Flag'), ['YES']);
  assert.match(hd.get('X-Spam-Status')[0]!, /^Yes, score=100\d\.\d required=5\.0 tests=.*GTUBE/);
  assert.match(hd.get('X-Spam-Score')[0]!, /^100\d\.\d$/);
  assert.match(r.message!.render().toString(), /^X-Spam-Flag: YES\r\nX-Spam-Status: Yes, /);
  const s = scanResults(r.message)?.spam;
  assert.ok(s && s.score >= 1000 && s.max === 10 && s.scanner === 'spamassassin');
  assert.match(r.trace[0]!.detail ?? '', /^tagged: /);
  await h.close();
});

test('a score between the thresholds (local rule, 6 points): tagged at 5, quarantined at 6, rejected at 6 only when reject_score says so', async () => {
  const tag = testPlugin(plugin, { port: spamd.port, tag_score: 5, reject_score: 10 });
  const r1 = await tag.run('data', { message: SPAMMY });
  assert.equal(r1.verdict.kind, 'next');
  assert.deepEqual(r1.message!.headers.get('X-Spam-Flag'), ['YES']);
  assert.match(r1.message!.headers.get('X-Spam-Status')[0]!, /POSTERN_TEST_SPAMMY/);
  await tag.close();
  const q = testPlugin(plugin, { port: spamd.port, tag_score: 5, quarantine_score: 6, reject_score: 10, quarantine_folder: 'Spam' });
  const r2 = await q.run('data', { message: SPAMMY });
  assert.equal(r2.verdict.kind, 'quarantine');
  assert.equal((r2.verdict as { folder: string }).folder, 'Spam');
  assert.deepEqual(r2.message!.headers.get('X-Spam-Flag'), ['YES']);
  await q.close();
  const low = testPlugin(plugin, { port: spamd.port, tag_score: 8 });
  const r3 = await low.run('data', { message: SPAMMY });
  assert.deepEqual(r3.message!.headers.get('X-Spam-Flag'), [], 'under tag_score: no flag');
  assert.match(r3.message!.headers.get('X-Spam-Status')[0]!, /^No, score=6\.\d required=8\.0/);
  await low.close();
});

test('a clean message passes with X-Spam-Status: No and X-Spam-Score, no flag; forged headers are replaced', async () => {
  const h = testPlugin(plugin, { port: spamd.port, tag_score: 5, reject_score: 10 });
  const r = await h.run('data', { message: msg('See you at noon.', 'X-Spam-Flag: NO-FORGED\nX-Spam-Status: No, forged\n') });
  assert.equal(r.verdict.kind, 'next');
  const hd = r.message!.headers;
  assert.deepEqual(hd.get('X-Spam-Flag'), []);
  assert.equal(hd.get('X-Spam-Status').length, 1);
  assert.match(hd.get('X-Spam-Status')[0]!, /^No, score=-?\d+\.\d required=5\.0/);
  assert.match(hd.get('X-Spam-Score')[0]!, /^-?\d+\.\d$/);
  assert.ok(scanResults(r.message)!.spam!.score < 5);
  await h.close();
});

test('commands: check (score only), report (X-Spam-Report), process (SpamAssassin\'s own headers); the unix socket', async () => {
  const check = testPlugin(plugin, { socket: spamd.socket, command: 'check' });
  const r1 = await check.run('data', { message: SPAM });
  assert.match(r1.message!.headers.get('X-Spam-Status')[0]!, /^Yes, score=100\d\.\d required=5\.0$/, 'no tests= with CHECK');
  await check.close();
  const report = testPlugin(plugin, { port: spamd.port, command: 'report' });
  const r2 = await report.run('data', { message: SPAM });
  assert.match(r2.message!.headers.get('X-Spam-Report')[0]!, /Content analysis details: .*GTUBE/);
  assert.match(r2.message!.headers.get('X-Spam-Status')[0]!, /tests=.*GTUBE/);
  assert.ok(r2.message!.render().toString().split('\r\n').every((l) => l.length <= 998));
  await report.close();
  const proc = testPlugin(plugin, { port: spamd.port, command: 'process' });
  const r3 = await proc.run('data', { message: SPAM });
  assert.match(r3.message!.headers.get('X-Spam-Checker-Version')[0]!, /^SpamAssassin \d/);
  assert.match(r3.message!.headers.get('X-Spam-Status')[0]!, /^Yes, score=100\d\.\d required=5\.0 tests=.*GTUBE/);
  assert.deepEqual(r3.message!.headers.get('X-Spam-Flag'), ['YES']);
  // The body stays ours, byte for byte: only headers are taken from SpamAssassin's copy.
  assert.ok(r3.message!.render().toString().endsWith(`\r\n\r\n${GTUBE}\r\n`));
  await proc.close();
});

test('max_size: a larger message is not sent to spamd, and says so in the trace', async () => {
  const h = testPlugin(plugin, { port: spamd.port, max_size: 100, reject_score: 10 });
  const r = await h.run('data', { message: SPAM });
  assert.equal(r.verdict.kind, 'next');
  assert.match(r.trace[0]!.detail ?? '', /^not scanned: \d+ octets, over max_size 100$/);
  assert.deepEqual(r.message!.headers.get('X-Spam-Status'), []);
  await h.close();
});

test('authenticated and trusted clients are not scanned unless scan_relaying', async () => {
  const h = testPlugin(plugin, { port: spamd.port, reject_score: 10 });
  h.newConnection({ authUser: 'alice@example.test', relaying: true });
  assert.equal((await h.run('data', { message: SPAM })).verdict.kind, 'next');
  await h.close();
  const all = testPlugin(plugin, { port: spamd.port, reject_score: 10, scan_relaying: true });
  all.newConnection({ authUser: 'alice@example.test', relaying: true });
  assert.equal((await all.run('data', { message: SPAM })).verdict.kind, 'reject');
  await all.close();
});

test('spamd stopped: 451 4.3.0 by default, `next` with on_error fail-open', async () => {
  const h = testPlugin(plugin, { port: spamd.port, reject_score: 10 });
  const open = testPlugin(plugin, { port: spamd.port, reject_score: 10, on_error: 'fail-open' });
  await spamd.stop();
  try {
    const r = await h.run('data', { message: SPAM });
    assert.deepEqual(r.verdict, { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' });
    assert.match(r.trace.at(-1)?.detail ?? '', /spamd: cannot connect to 127\.0\.0\.1:\d+/);
    const o = await open.run('data', { message: SPAM });
    assert.equal(o.verdict.kind, 'next');
    assert.deepEqual(o.message!.headers.get('X-Spam-Status'), []);
  } finally {
    await spamd.start();
  }
  assert.equal((await h.run('data', { message: SPAM })).verdict.kind, 'reject');
  await h.close();
  await open.close();
});

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { command: 'tell' }), /spamassassin\.command/);
  assert.throws(() => testPlugin(plugin, { tag_score: 'five' }), /spamassassin\.tag_score/);
  assert.throws(() => testPlugin(plugin, { tag_score: 12, reject_score: 10 }), /spamassassin\.tag_score: tag_score must not be above reject_score/);
  assert.throws(() => testPlugin(plugin, { quarantine_score: 12, reject_score: 10 }), /spamassassin\.quarantine_score: quarantine_score must not be above/);
  assert.throws(() => testPlugin(plugin, { socket: '/run/spamd.sock', host: 'localhost' }), /spamassassin\.socket: give either/);
  assert.throws(() => testPlugin(plugin, { user: 'a b' }), /spamassassin\.user: expected a user name/);
  assert.throws(() => testPlugin(plugin, { reject_text: 'x\n250 ok' }), /spamassassin\.reject_text: must be one line/);
  assert.throws(() => testPlugin(plugin, { max_size: '1Q' }), /spamassassin\.max_size: expected a size/);
});
