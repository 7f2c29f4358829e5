// rspamd against a loopback HTTP server that replays /checkv2 replies: the GTUBE and clean
// replies are as Debian's rspamd 3.4 gave them (trimmed to a few symbols), the others follow
// rspamd's protocol documentation (actions, milter add/remove headers, subject, smtp_message).
// Checked: the request (method, path, envelope headers, body), every action's verdict, header
// edits, spamtest results, the unix socket, the failure policy and option errors. A real rspamd
// (GTUBE, a clean message, rspamd stopped) is in test/e2e/rspamd.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import plugin from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';

/** As rspamd 3.4 answered GTUBE: a pre-filter result, is_skipped with the reject action. */
const GTUBE_REPLY = {
  is_skipped: true,
  score: 15.0,
  required_score: 15.0,
  action: 'reject',
  symbols: { GTUBE: { name: 'GTUBE', score: 0.0, metric_score: 0.0 } },
  messages: { smtp_message: 'Gtube pattern' },
  'message-id': 'x@b.test',
  time_real: 0.351817,
};
/** As rspamd 3.4 answered a plain message from an address without rDNS (symbols trimmed). */
const ADD_HEADER_REPLY = {
  is_skipped: false,
  score: 6.0,
  required_score: 15.0,
  action: 'add header',
  symbols: {
    RDNS_NONE: { name: 'RDNS_NONE', score: 1.0, metric_score: 1.0, description: "Cannot resolve reverse DNS for sender's IP" },
    AUTH_NA: { name: 'AUTH_NA', score: 1.0, metric_score: 1.0, description: 'Authenticating message via SPF/DKIM/DMARC/ARC not available' },
    MIME_GOOD: { name: 'MIME_GOOD', score: -0.1, metric_score: -0.1, description: 'Known content-type', options: ['text/plain'] },
  },
  milter: {
    add_headers: {
      'X-Spamd-Result': { value: 'default: False [6.00 / 15.00];\n\tRDNS_NONE(1.00)[];\n\tAUTH_NA(1.00)[]', order: 0 },
      'X-Rspamd-Server': { value: 'mx1', order: 0 },
    },
    remove_headers: { 'X-Spam': 1 },
  },
};
const REPLIES: Record<string, unknown> = {
  gtube: GTUBE_REPLY,
  'add-header': ADD_HEADER_REPLY,
  clean: { is_skipped: false, score: -0.1, required_score: 15, action: 'no action', symbols: { MIME_GOOD: { name: 'MIME_GOOD', score: -0.1 } } },
  'soft-reject': { is_skipped: false, score: 9, required_score: 15, action: 'soft reject', messages: { smtp_message: 'Try again later (ratelimit)' } },
  greylist: { is_skipped: false, score: 4.5, required_score: 15, action: 'greylist', symbols: {} },
  rewrite: { is_skipped: false, score: 8.5, required_score: 15, action: 'rewrite subject', subject: '[SPAM] hello', symbols: {} },
  'rewrite-no-subject': { is_skipped: false, score: 8.5, required_score: 15, action: 'rewrite subject', symbols: {} },
  'reject-plain': { is_skipped: false, score: 20, required_score: 15, action: 'reject', symbols: {} },
};

interface Seen {
  method?: string;
  url?: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: string;
}

let server: Server;
let port: number;
let dir: string;
let unixServer: Server;
const seen: Seen[] = [];

/** The reply is chosen by the Subject of the message ("Subject: rspamd:<name>"). */
function handler(req: IncomingMessage, res: import('node:http').ServerResponse) {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString();
    seen.push({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body });
    const name = /^Subject: rspamd:(\S+)/m.exec(body)?.[1] ?? 'clean';
    if (name === 'http-500') return void res.writeHead(500).end('Internal error');
    if (name === 'not-json') return void res.writeHead(200, { 'Content-Type': 'application/json' }).end('<html>');
    if (name === 'hang') return; // never answers
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(REPLIES[name]));
  });
}

before(async () => {
  server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
  dir = await mkdtemp(join(tmpdir(), 'postern-rspamd-'));
  unixServer = createServer(handler);
  await new Promise<void>((r) => unixServer.listen(join(dir, 'rspamd.sock'), r));
});
after(async () => {
  server.closeAllConnections();
  unixServer.closeAllConnections();
  await new Promise((r) => server.close(r));
  await new Promise((r) => unixServer.close(r));
  await rm(dir, { recursive: true, force: true });
});

const msg = (name: string, extra = '') => `${extra}From: a@sender.test\nTo: rcpt@example.test\nSubject: rspamd:${name}\n\nHello.\n`;

async function run(name: string, options: Record<string, unknown> = {}, extra = '') {
  const h = testPlugin(plugin, { port, ...options });
  h.newConnection({ remoteAddress: '192.0.2.7', helo: 'client.sender.test', clientHostname: 'client.sender.test' });
  const r = await h.run('data', {
    tx: { id: 'QID123', mailFrom: 'a@sender.test', recipients: [{ address: 'rcpt@example.test' }, { address: 'other@example.test' }] },
    message: msg(name, extra),
  });
  await h.close();
  return r;
}

test('the request: POST /checkv2, envelope as headers (one Rcpt per recipient), the message as body', async () => {
  seen.length = 0;
  await run('clean');
  const s = seen[0]!;
  assert.equal(s.method, 'POST');
  assert.equal(s.url, '/checkv2');
  assert.equal(s.headers.ip, '192.0.2.7');
  assert.equal(s.headers.helo, 'client.sender.test');
  assert.equal(s.headers.hostname, 'client.sender.test');
  assert.equal(s.headers.from, 'a@sender.test');
  assert.equal(s.headers['queue-id'], 'QID123');
  const rcpts = s.rawHeaders.filter((_, i) => i % 2 === 0 && s.rawHeaders[i]!.toLowerCase() === 'rcpt').length;
  assert.equal(rcpts, 2);
  assert.equal(s.headers.user, undefined);
  assert.equal(s.body, msg('clean').replace(/\n/g, '\r\n'));
});

test('mail a content filter hands back with XFORWARD: IP, Helo and Hostname are the client it named, not the filter; unknown ones are left out', async () => {
  seen.length = 0;
  const h = testPlugin(plugin, { port });
  h.newConnection({ remoteAddress: '127.0.0.1', helo: 'filter.example', clientHostname: 'localhost' });
  const tx = { id: 'QID123', mailFrom: 'a@sender.test', recipients: [{ address: 'rcpt@example.test' }] };
  await h.run('data', { tx, forwarded: { address: '192.0.2.9', helo: 'origin-helo.test', hostname: 'origin.test', ident: 'ABC' }, message: msg('clean') });
  await h.run('data', { tx, forwarded: { hostname: 'origin.test' }, message: msg('clean') });
  await h.close();
  assert.equal(seen[0]!.headers.ip, '192.0.2.9');
  assert.equal(seen[0]!.headers.helo, 'origin-helo.test');
  assert.equal(seen[0]!.headers.hostname, 'origin.test');
  assert.equal(seen[1]!.headers.ip, undefined);
  assert.equal(seen[1]!.headers.helo, undefined);
  assert.equal(seen[1]!.headers.hostname, 'origin.test');
});

test('GTUBE (is_skipped with action reject, as rspamd 3.4 answers it): 550 5.7.1 with rspamd\'s message', async () => {
  const r = await run('gtube');
  assert.deepEqual(r.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Gtube pattern' });
  assert.match(r.trace[0]!.detail ?? '', /^action "reject", score 15\.00\/15\.00 \(GTUBE\), \d+ms$/);
  const plain = await run('reject-plain', { reject_text: 'No spam here' });
  assert.deepEqual(plain.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'No spam here' });
});

test('add header: rspamd\'s milter headers added (one line), its remove_headers removed, X-Spam-Flag and X-Spam-Score; spamtest gets the score', async () => {
  const r = await run('add-header', {}, 'X-Spam: yes-forged\nX-Spam-Flag: NO\n');
  assert.equal(r.verdict.kind, 'next');
  const h = r.message!.headers;
  assert.deepEqual(h.get('X-Spam'), []);
  assert.deepEqual(h.get('X-Spamd-Result'), ['default: False [6.00 / 15.00]; RDNS_NONE(1.00)[]; AUTH_NA(1.00)[]']);
  assert.deepEqual(h.get('X-Rspamd-Server'), ['mx1']);
  assert.deepEqual(h.get('X-Spam-Flag'), ['YES']);
  assert.deepEqual(h.get('X-Spam-Score'), ['6.00']);
  assert.deepEqual(scanResults(r.message)?.spam, { score: 6, max: 10, scanner: 'rspamd' });
});

test('no action: delivered, X-Spam-Score only', async () => {
  const r = await run('clean');
  assert.equal(r.verdict.kind, 'next');
  assert.deepEqual(r.message!.headers.get('X-Spam-Flag'), []);
  assert.deepEqual(r.message!.headers.get('X-Spam-Score'), ['-0.10']);
});

test('soft reject → 451 4.7.1 with rspamd\'s message; greylist → 451 4.7.1 (or nothing with greylist: false)', async () => {
  assert.deepEqual((await run('soft-reject')).verdict, { kind: 'tempfail', code: 451, enhanced: '4.7.1', text: 'Try again later (ratelimit)' });
  assert.deepEqual((await run('greylist')).verdict, { kind: 'tempfail', code: 451, enhanced: '4.7.1', text: 'Greylisted, please try again later' });
  assert.equal((await run('greylist', { greylist: false })).verdict.kind, 'next');
});

test('rewrite subject: rspamd\'s subject, or the template around the original', async () => {
  const r1 = await run('rewrite');
  assert.deepEqual(r1.message!.headers.get('Subject'), ['[SPAM] hello']);
  assert.deepEqual(r1.message!.headers.get('X-Spam-Flag'), ['YES']);
  const r2 = await run('rewrite-no-subject', { subject_template: '{spam} %s' });
  assert.deepEqual(r2.message!.headers.get('Subject'), ['{spam} rspamd:rewrite-no-subject']);
});

test('authenticated sender: User is sent; over the unix socket too', async () => {
  seen.length = 0;
  const h = testPlugin(plugin, { socket: join(dir, 'rspamd.sock') });
  h.newConnection({ remoteAddress: '192.0.2.7', authUser: 'alice@example.test', relaying: true });
  const r = await h.run('data', { message: msg('gtube') });
  assert.equal(r.verdict.kind, 'reject');
  assert.equal(seen[0]!.headers.user, 'alice@example.test');
  await h.close();
});

test('failures: HTTP 500, not JSON, no answer in time, nobody listening → 451 4.3.0; fail-open → next', async () => {
  const tempfail = { kind: 'tempfail', code: 451, enhanced: '4.3.0', text: 'Policy check unavailable' };
  const r500 = await run('http-500');
  assert.deepEqual(r500.verdict, tempfail);
  assert.match(r500.trace.at(-1)!.detail ?? '', /answered HTTP 500/);
  const bad = await run('not-json');
  assert.deepEqual(bad.verdict, tempfail);
  assert.match(bad.trace.at(-1)!.detail ?? '', /not a \/checkv2 reply/);
  const slow = await run('hang', { timeout: '300ms' });
  assert.deepEqual(slow.verdict, tempfail);
  assert.equal(slow.trace.at(-1)!.verdict, 'timeout');
  const closed = await run('clean', { port: 1 });
  assert.deepEqual(closed.verdict, tempfail);
  assert.match(closed.trace.at(-1)!.detail ?? '', /rspamd: 127\.0\.0\.1:1: connect ECONNREFUSED/);
  assert.equal((await run('http-500', { on_error: 'fail-open' })).verdict.kind, 'next');
});

test('max_size: larger messages are not sent', async () => {
  seen.length = 0;
  const r = await run('gtube', { max_size: 10 });
  assert.equal(r.verdict.kind, 'next');
  assert.equal(seen.length, 0);
  assert.match(r.trace[0]!.detail ?? '', /^not scanned: \d+ octets, over max_size 10$/);
});

test('options are validated with key paths', () => {
  assert.throws(() => testPlugin(plugin, { port: 0 }), /rspamd\.port/);
  assert.throws(() => testPlugin(plugin, { socket: '/x', host: 'h' }), /rspamd\.socket: give either/);
  assert.throws(() => testPlugin(plugin, { subject_template: 'a\nb' }), /rspamd\.subject_template: must be one line/);
  assert.throws(() => testPlugin(plugin, { url: 'http://x' }), /rspamd.*url/);
});
