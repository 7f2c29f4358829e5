// The API through a real `postern start` (listen.api on port 0) with fetch, and its effect on
// SMTP without a restart: a relay network added over REST lets the client relay on its next
// connection; a rule PUT refuses the next message, and the transaction log line names the rule,
// its line and the rule-set version; a rollback restores the old behaviour.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { waitFor } from '../helpers/wait.js';
import { checkResponse } from './harness.js';

const TOKEN = 'daemon-test-token-0123456789';

describe('REST API in a running daemon', () => {
  let d: RunningDaemon;
  let base: string;
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    checkResponse(method, path.split('?')[0]!, r.status, r.headers.get('content-type') ?? undefined, text);
    return { status: r.status, json: () => JSON.parse(text) as Record<string, unknown> };
  };

  before(async () => {
    d = await startDaemon({
      listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
      relay: { networks: [] },
      plugins: ['relay-acl', 'sieve'],
      api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'admin' }] },
      },
      { timeoutMs: 60_000 },
    );
    base = `http://127.0.0.1:${d.ports.api}`;
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  /** One SMTP transaction from 127.0.0.1; returns the RCPT reply and, if accepted, the DATA reply. */
  const send = async (rcpt: string, subject: string) => {
    const s = await openSmtp(d.ports.smtp!);
    try {
      await s.expect('220');
      await s.cmd('EHLO client.example', '250');
      await s.cmd('MAIL FROM:<a@sender.example>', '250');
      s.send(`RCPT TO:<${rcpt}>`);
      const rcptReply = (await s.reply())!;
      if (!rcptReply.startsWith('250')) return { rcpt: rcptReply };
      await s.cmd('DATA', '354');
      s.send(`From: a@sender.example\r\nTo: ${rcpt}\r\nSubject: ${subject}\r\n\r\nhello\r\n.`);
      return { rcpt: rcptReply, data: (await s.reply())! };
    } finally {
      s.close();
    }
  };

  it('serves health without a token and refuses /v1 without one', async () => {
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const r = await fetch(`${base}/v1/rules`);
    assert.equal(r.status, 401);
    assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/);
  });

  it('a relay network added over REST applies to the next connection, and removing it takes it back', async () => {
    assert.match((await send('x@foreign.example', 'hi')).rcpt, /^554 5\.7\.1/);
    const added = await api('POST', '/v1/policies/relay/networks', { cidr: '127.0.0.1/32' });
    assert.equal(added.status, 201);
    assert.match((await send('x@foreign.example', 'hi')).rcpt, /^250/);
    assert.equal((await api('DELETE', `/v1/policies/relay/networks/${String(added.json().id)}`)).status, 204);
    assert.match((await send('x@foreign.example', 'hi')).rcpt, /^554 5\.7\.1/);
  });

  it('a rule PUT refuses the next message; the log line has rule, line and version; a rollback restores', async () => {
    await d.cli(['user', 'add', 'bob@example.test', '--password-stdin'], 'pw\n');
    assert.match((await send('bob@example.test', 'lottery')).data!, /^250/);
    const v1 = await api('PUT', '/v1/rules/no-lottery', { script: 'if header :contains "subject" "lottery" {\n  discard;\n}\n' });
    assert.equal(v1.status, 201);
    const v2 = await api('PUT', '/v1/rules/no-lottery', { script: 'require "reject";\nif header :contains "subject" "lottery" {\n  reject "no lotteries";\n}\n' });
    const version = Number(v2.json().version);
    // The rules channel event reaches the daemon's sieve plugin on a later turn.
    const refused = await waitFor(
      () => send('bob@example.test', 'lottery'),
      (r) => r.data?.startsWith('550') ?? false,
    );
    assert.equal(refused.data, '550 5.7.1 no lotteries');
    const line = await waitFor(
      () => d.logs.find((l) => l.evt === 'smtp.transaction' && l.outcome === 'reject'),
      (l) => l !== undefined,
    );
    const traced = (line!.trace as { rule?: string; line?: number; version?: string }[]).find((t) => t.rule === 'no-lottery');
    assert.deepEqual(traced, { plugin: 'sieve', stage: 'data', verdict: 'reject', ms: 0, rcpt: 'bob@example.test', rule: 'no-lottery', line: 3, version: String(version) });

    const rb = await api('POST', `/v1/rules/versions/${Number(v1.json().version)}/rollback`);
    assert.equal(rb.status, 200);
    const back = await waitFor(
      () => send('bob@example.test', 'lottery'),
      (r) => r.data?.startsWith('250') ?? false,
    );
    assert.match(back.data!, /^250/);
  });

  it('stats and metrics count the transactions, the plugins and the rule that acted', async () => {
    const stats = (await api('GET', '/v1/stats')).json() as { transactions: Record<string, number>; plugins: { plugin: string; stage: string; calls: number }[]; rules: { rule: string; hits: number; verdicts: Record<string, number> }[] };
    assert.ok((stats.transactions.reject ?? 0) >= 1);
    assert.ok((stats.transactions.queued ?? 0) >= 1);
    assert.ok(stats.plugins.some((p) => p.plugin === 'sieve' && p.stage === 'data' && p.calls >= 2));
    const rule = stats.rules.find((r) => r.rule === 'no-lottery')!;
    assert.ok(rule.verdicts.reject! >= 1);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^postern_messages_total\{outcome="reject",code="550"\} [1-9]\d*$/m);
    assert.match(metrics, /^postern_rule_hits_total\{rule="no-lottery",verdict="reject"\} [1-9]\d*$/m);
  });
});
