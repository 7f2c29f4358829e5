// clamav against a real clamd (Debian clamav-daemon) started by the test with its own EICAR hash
// signature (test/helpers/clamd.ts): INSTREAM over TCP and the unix socket, chunking, max_size
// and clamd's own StreamMaxLength, quarantine, the failure policy, the trace and virustest.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import plugin, { parseReply } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';
import { EICAR, EICAR_FOUND, startClamd, type RunningClamd } from '../../test/helpers/clamd.js';

let clamd: RunningClamd;
before(async () => {
  clamd = await startClamd({ streamMaxLength: '1M' });
});
after(async () => {
  await clamd?.close();
});

/** A MIME message with `attachment` as a base64 file part (so clamd must decode it to see it). */
function mimeWith(attachment: string, opts: { padding?: number } = {}): string {
  const b64 = Buffer.from(attachment).toString('base64').replace(/.{76}/g, '$&\n');
  return [
    'From: a@sender.test',
    'To: rcpt@example.test',
    'Subject: with attachment',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain',
    '',
    opts.padding ? 'x'.repeat(75).concat('\n').repeat(Math.ceil(opts.padding / 76)) : 'see attached',
    '--b1',
    'Content-Type: application/octet-stream; name="file.com"',
    'Content-Disposition: attachment; filename="file.com"',
    'Content-Transfer-Encoding: base64',
    '',
    b64,
    '--b1--',
    '',
  ].join('\n');
}

const CLEAN = 'From: a@sender.test\nTo: rcpt@example.test\nSubject: hello\n\nJust text.\n';

test('clamd replies are parsed (table)', () => {
  const cases: [string, ReturnType<typeof parseReply>][] = [
    ['stream: OK\0', { kind: 'clean' }],
    ['stream: Eicar-Test-Signature FOUND\0', { kind: 'infected', signature: 'Eicar-Test-Signature' }],
    ['stream: Win.Test.EICAR_HDB-1 FOUND', { kind: 'infected', signature: 'Win.Test.EICAR_HDB-1' }],
    ['INSTREAM size limit exceeded. ERROR\0', { kind: 'error', reason: "INSTREAM size limit exceeded. ERROR (set max_size at or below clamd's StreamMaxLength)" }],
    ['UNKNOWN COMMAND\0', { kind: 'error', reason: 'UNKNOWN COMMAND' }],
    ['', { kind: 'error', reason: 'empty reply' }],
  ];
  for (const [reply, want] of cases) assert.deepEqual(parseReply(Buffer.from(reply)), want, reply);
});

test('EICAR in a base64 MIME attachment is refused with 554 5.7.1 naming the signature (TCP)', async () => {
  const h = testPlugin(plugin, { host: '127.0.0.1', port: clamd.port });
  const r = await h.run('data', { message: mimeWith(EICAR) });
  assert.deepEqual(r.verdict, { kind: 'reject', code: 554, enhanced: '5.7.1', text: `Message refused: virus found (${EICAR_FOUND})` });
  // The trace: the plugin's own entry with clamd's finding, then the verdict.
  const own = r.trace.find((e) => e.plugin === 'clamav' && e.detail?.startsWith('infected'));
  assert.equal(own?.detail, `infected: ${EICAR_FOUND}`);
  assert.equal(r.trace.at(-1)?.verdict, 'reject');
  assert.deepEqual(scanResults(r.message), { virus: { level: 5, signature: EICAR_FOUND, scanner: 'clamav' } });
  await h.close();
});

test('a clean message passes with X-Virus-Status: clean, and a forged status is replaced', async () => {
  const h = testPlugin(plugin, { host: '127.0.0.1', port: clamd.port });
  const r = await h.run('data', { message: `X-Virus-Status: clean-forged\n${CLEAN}` });
  assert.equal(r.verdict.kind, 'next');
  assert.deepEqual(r.message!.headers.get('X-Virus-Status'), ['clean']);
  assert.match(r.message!.render().toString(), /^X-Virus-Status: clean\r\nFrom: /);
  assert.match(r.trace.find((e) => e.detail?.startsWith('clean'))?.detail ?? '', /^clean \(clamd 127\.0\.0\.1:\d+, \d+ octets, \d+ms\)$/);
  assert.equal(scanResults(r.message)?.virus?.level, 1);
  await h.close();
});

test('the unix socket works the same', async () => {
  const h = testPlugin(plugin, { socket: clamd.socket });
  assert.equal((await h.run('data', { message: CLEAN })).verdict.kind, 'next');
  const r = await h.run('data', { message: mimeWith(EICAR) });
  assert.equal(r.verdict.kind, 'reject');
  assert.match((r.verdict as { text: string }).text, new RegExp(EICAR_FOUND.replaceAll('.', '\\.')));
  await h.close();
});

test('small chunks: a 300K message sent in 4K chunks is reassembled by clamd (EICAR at the end)', async () => {
  const h = testPlugin(plugin, { host: '127.0.0.1', port: clamd.port, chunk_size: '4K' });
  const msg = mimeWith(EICAR, { padding: 300_000 });
  assert.ok(msg.length > 300_000);
  const r = await h.run('data', { message: msg });
  assert.equal(r.verdict.kind, 'reject');
  await h.close();
});

test('action quarantine: delivered into the folder with X-Virus-Status: infected and the signature', async () => {
  const h = testPlugin(plugin, { port: clamd.port, action: 'quarantine', quarantine_folder: 'Virus' });
  const r = await h.run('data', { message: mimeWith(EICAR) });
  assert.deepEqual(r.verdict, { kind: 'quarantine', folder: 'Virus', reason: `clamav: ${EICAR_FOUND}` });
  assert.deepEqual(r.message!.headers.get('X-Virus-Status'), ['infected']);
  assert.deepEqual(r.message!.headers.get('X-Virus-Signature'), [EICAR_FOUND]);
  await h.close();
});

test('max_size: oversize skip (not scanned), truncate (first octets only), reject (552 5.3.4)', async () => {
  const msg = mimeWith(EICAR, { padding: 20_000 });
  const skip = testPlugin(plugin, { port: clamd.port, max_size: '10K' });
  const r1 = await skip.run('data', { message: msg });
  assert.equal(r1.verdict.kind, 'next');
  assert.deepEqual(r1.message!.headers.get('X-Virus-Status'), ['not scanned']);
  assert.match(r1.trace[0]!.detail ?? '', /^not scanned: \d+ octets, over max_size 10240$/);
  await skip.close();
  // The attachment lies past the first 10K: clamd never sees it.
  const trunc = testPlugin(plugin, { port: clamd.port, max_size: '10K', oversize: 'truncate' });
  const r2 = await trunc.run('data', { message: msg });
  assert.equal(r2.verdict.kind, 'next');
  assert.match(r2.trace[0]!.detail ?? '', /^clean \(clamd .*, 10240 octets,/);
  await trunc.close();
  const rej = testPlugin(plugin, { port: clamd.port, max_size: '10K', oversize: 'reject' });
  assert.deepEqual((await rej.run('data', { message: msg })).verdict, { kind: 'reject', code: 552, enhanced: '5.3.4', text: 'Message too big to be scanned for viruses' });
  await rej.close();
});

test("clamd's own StreamMaxLength (1M here) below max_size: the scan fails, 451 4.3.0 with the reason in the trace", async () => {
  const h = testPlugin(plugin, { port: clamd.port, max_size: '2M' });
  const r = await h.run('data', { message: mimeWith(EICAR, { padding: 1_200_000 }) });
  assert.deepEqual(r.verdict, { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' });
  assert.match(r.trace.at(-1)?.detail ?? '', /(size limit exceeded|closed the connection while the request was being written).*StreamMaxLength/);
  await h.close();
});

test('clamd stopped: 451 4.3.0 by default, `next` with on_error fail-open; back up: scanned again', async () => {
  const down = testPlugin(plugin, { port: clamd.port });
  const open = testPlugin(plugin, { port: clamd.port, on_error: 'fail-open' });
  await clamd.stop();
  try {
    const r = await down.run('data', { message: mimeWith(EICAR) });
    assert.deepEqual(r.verdict, { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' });
    assert.equal(r.trace.at(-1)?.verdict, 'error');
    assert.match(r.trace.at(-1)?.detail ?? '', /cannot connect to 127\.0\.0\.1:\d+/);
    assert.equal(r.message!.headers.get('X-Virus-Status').length, 0, 'no status claimed for an unscanned message');
    const o = await open.run('data', { message: mimeWith(EICAR) });
    assert.equal(o.verdict.kind, 'next');
  } finally {
    await clamd.start();
  }
  assert.equal((await down.run('data', { message: mimeWith(EICAR) })).verdict.kind, 'reject');
  await down.close();
  await open.close();
});

test('a clamd that accepts and never answers: the hook timeout gives 451 4.3.0', async () => {
  const socks: Socket[] = [];
  const mute = createServer((s) => void socks.push(s.on('error', () => {})));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const h = testPlugin(plugin, { port: (mute.address() as { port: number }).port, timeout: '300ms' });
  const r = await h.run('data', { message: CLEAN });
  assert.equal(r.verdict.kind, 'tempfail');
  assert.equal(r.trace.at(-1)?.verdict, 'timeout');
  await h.close();
  socks.forEach((s) => s.destroy());
  await new Promise((r) => mute.close(r));
});

test('scan_relaying false: authenticated mail is not scanned', async () => {
  const h = testPlugin(plugin, { port: clamd.port, scan_relaying: false });
  h.newConnection({ authUser: 'alice@example.test', relaying: true });
  const r = await h.run('data', { message: mimeWith(EICAR) });
  assert.equal(r.verdict.kind, 'next');
  assert.equal(r.trace.length, 1);
  await h.close();
});

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { port: 'x' }), /clamav\.port/);
  assert.throws(() => testPlugin(plugin, { port: 70000 }), /clamav\.port/);
  assert.throws(() => testPlugin(plugin, { socket: '/run/clamd.sock', host: '127.0.0.1' }), /clamav\.socket: give either socket/);
  assert.throws(() => testPlugin(plugin, { max_size: 'big' }), /clamav\.max_size: expected a size/);
  assert.throws(() => testPlugin(plugin, { action: 'drop' }), /clamav\.action/);
  assert.throws(() => testPlugin(plugin, { reject_text: 'a\r\n250 ok' }), /clamav\.reject_text: reject_text must be one line/);
  assert.throws(() => testPlugin(plugin, { reject_enhanced: '4.7.1' }), /clamav\.reject_enhanced: expected a 5\.x\.y/);
  assert.throws(() => testPlugin(plugin, { chunk_size: 0 }), /clamav\.chunk_size/);
  assert.throws(() => testPlugin(plugin, { hosts: ['a'] }), /clamav.*hosts/);
});
