// POST /v1/test: the dry-run through the real chain (relay-acl, sieve with store rules).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, type TestApi } from './harness.js';
import { pluginRegistry } from '../../src/pipeline/metrics.js';
import { grew, parseExposition } from '../helpers/prometheus.js';

const RULE = 'require ["reject", "fileinto"];\n# refuse obvious spam\nif header :contains "subject" "casino" {\n  reject "no gambling";\n}\nif address :domain "from" "news.example" { fileinto "News"; }\n';
const MESSAGE = 'From: a@sender.example\r\nTo: alice@example.test\r\nSubject: Big CASINO win\r\n\r\nhello\r\n';

interface Result {
  recipients: { address: string; outcome: string; reply: string; delivery?: Record<string, unknown> }[];
  trace: { stage: string; plugin: string; verdict: string; rule?: string; line?: number; version?: string; matched?: { line: number; test: string; header?: string; value?: string }[] }[];
}

describe('POST /v1/test (dry-run)', () => {
  let api: TestApi;
  let version: number;
  before(async () => {
    api = await startApi();
    await api.ctx.directory!.addUser('alice@example.test', 'pw');
    version = (await api.call({ method: 'PUT', url: '/v1/rules/spam', body: { script: RULE } })).json<{ version: number }>().version;
  });
  after(() => api.close());

  const dry = (envelope: Record<string, unknown>, message = MESSAGE) => api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client: '203.0.113.5', helo: 'client.example', from: 'a@sender.example', to: ['alice@example.test'], ...envelope }, message } });

  it('a message one rule rejects: the trace names the rule, its line, the matched header and the version; nothing is queued', async () => {
    const keysBefore = (await api.store.keys('')).sort();
    const r = await dry({});
    assert.equal(r.status, 200);
    const body = r.json<Result>();
    assert.deepEqual(body.recipients, [{ address: 'alice@example.test', outcome: 'rejected', reply: '550 5.7.1 no gambling' }]);
    const hit = body.trace.find((t) => t.plugin === 'sieve' && t.rule === 'spam')!;
    assert.equal(hit.verdict, 'reject');
    assert.equal(hit.line, 4);
    assert.equal(hit.version, String(version));
    assert.deepEqual(hit.matched, [{ line: 3, test: 'header', header: 'subject', value: 'Big CASINO win' }]);
    // Stages in protocol order (no plugin of this chain has a helo hook).
    assert.deepEqual([...new Set(body.trace.map((t) => t.stage))], ['connect', 'mail', 'rcpt', 'data']);
    // Nothing was stored: the store holds the same keys as before.
    assert.deepEqual((await api.store.keys('')).sort(), keysBefore);
  });

  it('is not traffic: no plugin metric counts it', async () => {
    const before = parseExposition(await pluginRegistry.metrics());
    const body = (await dry({})).json<Result>();
    assert.ok(body.trace.some((t) => t.plugin === 'sieve' && t.verdict === 'reject'), 'the chain ran');
    const after = parseExposition(await pluginRegistry.metrics());
    for (const [plugin, stage, verdict] of [['relay-acl', 'rcpt', 'next'], ['sieve', 'data', 'reject']] as const) {
      assert.equal(grew(before, after, 'postern_plugin_verdicts_total', { plugin, stage, verdict }), 0, `${plugin} ${stage} ${verdict}`);
    }
  });

  it('an accepted message: the outcome per recipient says where it would go', async () => {
    const r = await dry({ to: ['alice@example.test', 'nobody@example.test', 'x@foreign.example'] }, 'From: a@news.example\r\nSubject: weekly\r\n\r\nhi\r\n');
    const body = r.json<Result>();
    assert.equal(body.recipients[0]!.outcome, 'accepted');
    assert.match(body.recipients[0]!.reply, /^250 2\.0\.0 /);
    assert.deepEqual(body.recipients[0]!.delivery, { kind: 'local', user: 'alice@example.test', folders: ['News'] });
    assert.deepEqual(body.recipients.slice(1), [
      { address: 'nobody@example.test', outcome: 'rejected', reply: '550 5.1.1 User unknown' },
      { address: 'x@foreign.example', outcome: 'rejected', reply: '554 5.7.1 Relay access denied' },
    ]);
  });

  it('an authenticated sender may relay; the trace says so', async () => {
    const body = (await dry({ auth: 'alice@example.test', to: ['x@foreign.example'] }, 'Subject: ok\r\n\r\nhi\r\n')).json<Result>();
    assert.deepEqual(body.recipients[0]!.delivery, { kind: 'mx', domain: 'foreign.example' });
    assert.ok(body.trace.some((t) => t.stage === 'auth' && t.verdict === 'accept'));
  });

  it('a bad sender address refuses every recipient as MAIL FROM would', async () => {
    const body = (await dry({ from: 'not an address' })).json<Result>();
    assert.deepEqual(body.recipients, [{ address: 'alice@example.test', outcome: 'rejected', reply: '501 5.1.7 Bad sender address syntax' }]);
  });

  it('400 for a bad envelope (client not an IP, no recipients, unknown key), 401, 413 over the body limit', async () => {
    assertProblem(await dry({ client: 'host.example' }), 400, 'bad-request');
    assertProblem(await dry({ to: [] }), 400, 'bad-request');
    assertProblem(await dry({ port: 25 }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: '/v1/test', body: { envelope: {} } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: '/v1/test', token: null, body: {} }), 401, 'unauthorized');
    const big = 'x'.repeat(1024 * 1024 + 10);
    assertProblem(await dry({}, `Subject: big\r\n\r\n${big}`), 413, 'payload-too-large');
  });
});
