// Plugin metrics on /metrics of a running daemon, with real plugins: mail is sent through the
// chain, /metrics is scraped before and after and its exposition text parsed, and each count must
// have moved by what the mail did.
//
// Content filters: auth-results (SPF from the loopback DNS server), clamav (real clamd, the test's
// EICAR signature), spamassassin (real spamd), rspamd (a loopback HTTP server answering as
// rspamd's /checkv2 does: the Debian package is not installed here) and dkim-sign. A clean
// message, EICAR, GTUBE and a message while clamd is stopped.
//
// Greylist and rate-limit, behind a trusted PROXY protocol peer so the clients can be IPv6
// addresses of one /64 (2001:db8:1:2::/64) and of another: greylist's new / too-early / passed /
// auto-allowed, and rate-limit counting per /64 (a second address of the same /64 is over the
// limit; the other /64 is not).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { readMaildir, waitFor } from '../helpers/wait.js';
import { EICAR, EICAR_FOUND, startClamd, type RunningClamd } from '../helpers/clamd.js';
import { GTUBE, startSpamd, type RunningSpamd } from '../helpers/spamd.js';
import { grew, scrape, type Scrape } from '../helpers/prometheus.js';
import { buildProxyHeader } from '../../src/proxy/proxy-protocol.js';

const TOKEN = 'metrics-test-token-0123456789';

/** One transaction from `client`; resolves with the last reply the client heard. */
async function transaction(port: number, o: { from: string; to: string; body?: string; proxyFrom?: string }): Promise<string> {
  const s = await openSmtp(port, o.proxyFrom ? { localAddress: '127.0.0.2' } : {});
  try {
    if (o.proxyFrom) s.send(buildProxyHeader(2, { address: o.proxyFrom, port: 40000 }, { address: '2001:db8::25', port: 25 }));
    await s.expect('220');
    await s.cmd('EHLO client.example', '250');
    s.send(`MAIL FROM:<${o.from}>`);
    const mail = (await s.reply())!;
    if (!mail.startsWith('250')) return mail;
    s.send(`RCPT TO:<${o.to}>`);
    const rcpt = (await s.reply())!;
    if (!rcpt.startsWith('250') || o.body === undefined) return rcpt;
    await s.cmd('DATA', '354');
    s.send(`${o.body.replace(/\r?\n/g, '\r\n')}\r\n.`);
    const data = (await s.reply())!;
    s.send('QUIT');
    return data;
  } finally {
    s.close();
  }
}

const message = (subject: string, body: string, extra = '') =>
  `From: Someone <a@origin.test>\nTo: alice@example.test\nSubject: ${subject}\nDate: Fri, 27 Nov 2026 10:00:00 +0000\nMessage-ID: <${subject}@origin.test>\n${extra}\n${body}\n`;

const eicarMessage = () =>
  message(
    'infected',
    `--b1\nContent-Type: text/plain\n\nSee the attachment.\n--b1\nContent-Type: application/octet-stream; name=eicar.com\nContent-Transfer-Encoding: base64\n\n${Buffer.from(EICAR).toString('base64')}\n--b1--`,
    'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n',
  );

describe('content filter metrics on /metrics', () => {
  let dns: RunningDnsServer;
  let clamd: RunningClamd;
  let spamd: RunningSpamd;
  let rspamd: Server;
  let d: RunningDaemon;
  const rspamdAsked: string[] = [];

  before(async () => {
    [clamd, spamd] = await Promise.all([startClamd(), startSpamd()]);
    dns = await startDnsServer({ records: { 'origin.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] } } });
    // rspamd's /checkv2: a low score and "no action" for everything.
    rspamd = createServer((req, res) => {
      rspamdAsked.push(req.url ?? '');
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ score: 1.5, required_score: 15, action: 'no action', symbols: {} })));
    });
    await new Promise<void>((r) => rspamd.listen(0, '127.0.0.1', r));
    const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    d = await startDaemon(
      {
        listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
        api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'admin' }] },
        relay: { networks: [] },
        dns: { servers: [dns.server] },
        plugins: [
          'relay-acl',
          'auth-results',
          { clamav: { host: '127.0.0.1', port: clamd.port } },
          { spamassassin: { host: '127.0.0.1', port: spamd.port, reject_score: 20, timeout: '30s' } },
          { rspamd: { host: '127.0.0.1', port: (rspamd.address() as { port: number }).port } },
          { 'dkim-sign': { sign: 'all', keys: [{ domain: 'origin.test', selector: 's2026', private_key: key }] } },
        ],
      },
      { timeoutMs: 60_000 },
    );
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    await Promise.all([clamd?.close(), spamd?.close(), dns?.stop(), new Promise((r) => (rspamd ? rspamd.close(r) : r(undefined)))]);
    if (d) await removeDir(d.dir);
  });

  const send = (body: string) => transaction(d.ports.smtp!, { from: 'a@origin.test', to: 'alice@example.test', body });
  const metrics = () => scrape(d.ports.api!);

  it('a clean message: every plugin timed and its verdict counted; spam scores, SPF/DKIM/DMARC/ARC results, a DKIM signature', async () => {
    const b = await metrics();
    assert.match(await send(message('clean', 'Hello, a clean message.')), /^250 /);
    await waitFor(() => readMaildir(d, 'alice'), (m) => m.some((x) => x.bytes.includes('Subject: clean')));
    const a = await metrics();
    for (const [plugin, stage] of <[string, string][]>[
      ['relay-acl', 'rcpt'],
      ['auth-results', 'data'],
      ['clamav', 'data'],
      ['spamassassin', 'data'],
      ['rspamd', 'data'],
      ['dkim-sign', 'queue'],
    ]) {
      assert.equal(grew(b, a, 'postern_plugin_duration_seconds_count', { plugin, stage }), 1, `${plugin} ${stage} timed once`);
      assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin, stage, verdict: 'next' }), 1, `${plugin} ${stage} said next`);
    }
    assert.equal(grew(b, a, 'postern_spamassassin_score_count'), 1);
    assert.equal(grew(b, a, 'postern_spamassassin_score_bucket', { le: '1000' }), 1);
    assert.equal(grew(b, a, 'postern_rspamd_score_count'), 1);
    assert.equal(grew(b, a, 'postern_rspamd_score_sum'), 1.5);
    assert.equal(grew(b, a, 'postern_rspamd_score_bucket', { le: '1' }), 0, 'score 1.5 is above the le=1 bucket');
    assert.equal(grew(b, a, 'postern_rspamd_score_bucket', { le: '2' }), 1);
    assert.equal(grew(b, a, 'postern_rspamd_actions_total', { action: 'no action' }), 1);
    assert.equal(grew(b, a, 'postern_authresults_results_total', { method: 'spf', result: 'pass' }), 1);
    assert.equal(grew(b, a, 'postern_authresults_results_total', { method: 'dkim', result: 'none' }), 1);
    assert.equal(grew(b, a, 'postern_authresults_results_total', { method: 'dmarc', result: 'none' }), 1);
    assert.equal(grew(b, a, 'postern_authresults_results_total', { method: 'arc', result: 'none' }), 1);
    assert.equal(grew(b, a, 'postern_dkimsign_signatures_total', { domain: 'origin.test', algorithm: 'rsa-sha256' }), 1);
    assert.equal(grew(b, a, 'postern_clamav_viruses_total', { signature: EICAR_FOUND }), 0);
  });

  it('EICAR: a virus counted by signature, clamav reject counted, the later scanners not run', async () => {
    const b = await metrics();
    assert.match(await send(eicarMessage()), /^554 5\.7\.1 .*Postern\.Test\.EICAR/);
    const a = await metrics();
    assert.equal(grew(b, a, 'postern_clamav_viruses_total', { signature: EICAR_FOUND }), 1);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'clamav', stage: 'data', verdict: 'reject' }), 1);
    assert.equal(grew(b, a, 'postern_spamassassin_score_count'), 0);
    assert.equal(grew(b, a, 'postern_plugin_duration_seconds_count', { plugin: 'spamassassin', stage: 'data' }), 0);
  });

  it('GTUBE: its score (about 1000) lands above the 100 bucket, spamassassin reject counted', async () => {
    const b = await metrics();
    assert.match(await send(message('gtube', GTUBE)), /^550 5\.7\.1 /);
    const a = await metrics();
    assert.equal(grew(b, a, 'postern_spamassassin_score_count'), 1);
    assert.equal(grew(b, a, 'postern_spamassassin_score_bucket', { le: '100' }), 0);
    assert.equal(grew(b, a, 'postern_spamassassin_score_bucket', { le: '+Inf' }), 1);
    // GTUBE is 1000 points, give or take the other rules that hit (some score below zero, and
    // which of them hit depends on the rule set installed): 1000 itself is no safe bucket edge.
    const sum = grew(b, a, 'postern_spamassassin_score_sum');
    assert.ok(sum > 900 && sum < 1100, `score ${sum}`);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'spamassassin', stage: 'data', verdict: 'reject' }), 1);
  });

  it('clamd stopped: a scanner error counted as unreachable, and the hook as an error', async () => {
    await clamd.stop();
    let b: Scrape;
    try {
      b = await metrics();
      assert.match(await send(message('while-down', 'Hello.')), /^451 4\.3\.0 /);
    } finally {
      await clamd.start();
    }
    const a = await metrics();
    assert.equal(grew(b, a, 'postern_clamav_scanner_errors_total', { reason: 'unreachable' }), 1);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'clamav', stage: 'data', verdict: 'error' }), 1);
    assert.equal(grew(b, a, 'postern_clamav_scanner_errors_total', { reason: 'timeout' }), 0);
  });
});

describe('greylist and rate-limit metrics on /metrics; rate-limit per IPv6 /64', () => {
  let d: RunningDaemon;
  const SAME_64 = ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:ffff::3'];
  const OTHER_64 = '2001:db8:1:3::1';
  before(async () => {
    d = await startDaemon(
      {
        listen: { smtp: { host: '127.0.0.1', port: 0, proxy_protocol: { trusted: ['127.0.0.2'] } }, api: { host: '127.0.0.1', port: 0 } },
        api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'admin' }] },
        relay: { networks: [] },
        plugins: ['relay-acl', { 'rate-limit': { limits: [{ key: 'client_ip', max: 4, window: '1h' }] } }, { greylist: { delay: '1s', auto_allow_after: 1 } }],
      },
      { timeoutMs: 60_000 },
    );
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw\n');
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  const from = (ip: string, body?: string) => transaction(d.ports.smtp!, { from: 'bob@remote.example', to: 'alice@example.test', body, proxyFrom: ip });

  it('new, too-early, passed, auto-allowed; the /64 hits its rate limit, another /64 does not', async () => {
    const b = await scrape(d.ports.api!);
    // Rate limit 1/4 and 2/4 of the /64; greylist: a new triplet, then too early.
    assert.equal(await from(SAME_64[0]!), '451 4.7.1 Greylisted, please try again later');
    assert.equal(await from(SAME_64[1]!), '451 4.7.1 Greylisted, please try again later', 'same /64: the same triplet, too early');
    await new Promise((r) => setTimeout(r, 1100));
    // 3/4: the retry passes; with auto_allow_after 1 the /64 is auto-allowed from now on.
    assert.match(await from(SAME_64[0]!, 'Subject: greylisted\r\n\r\nHello.'), /^250 /);
    // 4/4 from a third address of the /64: greylisting skipped (auto-allowed).
    assert.match(await from(SAME_64[2]!, 'Subject: auto\r\n\r\nHello.'), /^250 /);
    // A fifth transaction from any address of that /64 is over the limit, named by the /64.
    assert.equal(await from(SAME_64[1]!), '451 4.7.0 Rate limit exceeded (client_ip 2001:db8:1:2::/64), try again later');
    // Another /64 has its own counter (and is a new network for greylisting).
    assert.equal(await from(OTHER_64), '451 4.7.1 Greylisted, please try again later');
    const a = await scrape(d.ports.api!);
    assert.equal(grew(b, a, 'postern_greylist_outcomes_total', { outcome: 'new' }), 2);
    assert.equal(grew(b, a, 'postern_greylist_outcomes_total', { outcome: 'too-early' }), 1);
    assert.equal(grew(b, a, 'postern_greylist_outcomes_total', { outcome: 'passed' }), 1);
    assert.equal(grew(b, a, 'postern_greylist_outcomes_total', { outcome: 'auto-allowed' }), 1);
    assert.equal(grew(b, a, 'postern_ratelimit_hits_total', { policy: 'client_ip 4/1h' }), 1);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'rate-limit', stage: 'mail', verdict: 'next' }), 5);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'rate-limit', stage: 'mail', verdict: 'tempfail' }), 1);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'greylist', stage: 'rcpt', verdict: 'tempfail' }), 3);
    assert.equal(grew(b, a, 'postern_plugin_verdicts_total', { plugin: 'greylist', stage: 'rcpt', verdict: 'next' }), 2);
    const got = await waitFor(() => readMaildir(d, 'alice'), (m) => m.length >= 2);
    assert.equal(got.length, 2);
  });
});
