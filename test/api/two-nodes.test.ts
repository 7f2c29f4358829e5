// Two `postern start` daemons sharing one Redis (REDIS_URL, default redis://127.0.0.1:6379, under a
// key prefix of this run's own), each with its own REST API:
//   - a transaction in progress finishes on the rule set version it started with, even when a PUT
//     lands between its RCPT and its DATA; the next transaction runs the new version; the version
//     id is in each transaction's log line;
//   - a rule PUT on A's API refuses a message sent to B within one second, deactivating it on B
//     lets it through A, a rollback on B restores the old behaviour on A;
//   - a network added to policies/relay on A lets a client relay through B.
// "Within one second" is a deadline: each check polls until the effect is seen and fails when it
// has not been seen one second after the change was answered.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp, type SmtpTranscript } from '../helpers/smtp-client.js';
import { waitFor } from '../helpers/wait.js';
import { daemonApi } from './harness.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:nodes:`;
const TOKEN = 'two-nodes-token-0123456789';
const WITHIN_MS = 1000;

const reject = (reason: string) => `require "reject";\nif header :contains "subject" "blockme" {\n  reject "${reason}";\n}\n`;

async function deleteKeys(prefix: string): Promise<void> {
  const r = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    await r.quit();
  }
}

/** An API call on one node, its answer checked against openapi.yaml. */
const api = (d: RunningDaemon, method: string, path: string, body?: unknown) => daemonApi(d.ports.api!, TOKEN)(method, path, body);

/** Opens a session from 127.0.0.1 and gets as far as an accepted RCPT; returns the RCPT reply. */
async function upToRcpt(port: number, rcpt: string): Promise<{ s: SmtpTranscript; rcpt: string }> {
  const s = await openSmtp(port);
  await s.expect('220');
  await s.cmd('EHLO client.example', '250');
  await s.cmd('MAIL FROM:<a@sender.example>', '250');
  s.send(`RCPT TO:<${rcpt}>`);
  return { s, rcpt: (await s.reply()) ?? '(closed)' };
}

/** DATA of a session whose RCPT was accepted; returns the final reply. */
async function data(s: SmtpTranscript, subject: string): Promise<string> {
  await s.cmd('DATA', '354');
  s.send(`From: a@sender.example\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nhello\r\n.`);
  return (await s.reply()) ?? '(closed)';
}

/** One whole transaction to bob@example.test; the DATA reply. */
async function send(d: RunningDaemon, subject: string): Promise<string> {
  const { s, rcpt } = await upToRcpt(d.ports.smtp!, 'bob@example.test');
  try {
    return rcpt.startsWith('250') ? await data(s, subject) : rcpt;
  } finally {
    s.close();
  }
}

/** Polls `fn` until `ok`; fails when not seen within one second of `since`. */
async function within<T>(since: number, what: string, fn: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const v = await waitFor(fn, ok, Math.max(0, since + WITHIN_MS - Date.now()));
  assert.ok(ok(v), `${what}: not seen within ${WITHIN_MS} ms (last: ${JSON.stringify(v)})`);
  return v;
}

type LogLine = Record<string, unknown> & { trace?: { plugin: string; stage: string; verdict: string; rule?: string; version?: string }[] };

describe('two nodes sharing one Redis, changed through the REST API', () => {
  let a: RunningDaemon;
  let b: RunningDaemon;

  before(async () => {
    const config = {
      listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
      store: { driver: 'redis', url: REDIS_URL, prefix: PREFIX },
      // No trusted networks: loopback is an ordinary Internet client, so relaying needs the store's list.
      relay: { networks: [] },
      plugins: ['relay-acl', 'sieve'],
      api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'admin' }] },
    };
    a = await startDaemon(config, { timeoutMs: 60_000 });
    b = await startDaemon(config, { timeoutMs: 60_000 });
    const added = await a.cli(['user', 'add', 'bob@example.test', '--no-password']);
    assert.equal(added.code, 0, added.stderr);
  });
  after(async () => {
    for (const d of [a, b]) {
      if (!d) continue;
      await d.stop();
      await removeDir(d.dir);
    }
    await deleteKeys(PREFIX);
  });

  it('a transaction in progress finishes on the version it started with; the next one runs the new version', { timeout: 30_000 }, async () => {
    const v1 = (await api(a, 'PUT', '/v1/rules/pinned', { script: reject('refused by version one') })).json<{ version: number }>().version;
    await within(Date.now(), 'version one live at A', () => send(a, 'blockme'), (r) => r === '550 5.7.1 refused by version one');

    const old = await upToRcpt(a.ports.smtp!, 'bob@example.test');
    try {
      assert.match(old.rcpt, /^250/);
      const put = await api(a, 'PUT', '/v1/rules/pinned', { script: reject('refused by version two') });
      assert.equal(put.status, 200);
      const v2 = put.json<{ version: number }>().version;
      assert.ok(v2 > v1);
      // A new transaction runs version two (on this node and on the other one)…
      const changedAt = Date.now();
      await within(changedAt, 'version two at A', () => send(a, 'blockme'), (r) => r === '550 5.7.1 refused by version two');
      await within(changedAt, 'version two at B', () => send(b, 'blockme'), (r) => r === '550 5.7.1 refused by version two');
      // …while the one that began before the change still runs version one.
      assert.equal(await data(old.s, 'blockme'), '550 5.7.1 refused by version one');

      const lines = await waitFor(
        () => a.logs.filter((l): l is LogLine => l.evt === 'smtp.transaction' && /refused by version (one|two)/.test(JSON.stringify(l.reply))),
        (ls) => ls.some((l) => JSON.stringify(l.reply).includes('version one') && ls.indexOf(l) === ls.length - 1),
      );
      const pinnedLine = lines[lines.length - 1]!;
      const newLine = lines.find((l) => JSON.stringify(l.reply).includes('version two'))!;
      const versions = (l: LogLine) => (l.trace ?? []).filter((t) => t.plugin === 'sieve' && t.version !== undefined).map((t) => `${t.stage}:${t.verdict}:${t.version}`);
      assert.deepEqual(versions(pinnedLine), [`mail:next:${v1}`, `data:reject:${v1}`]);
      assert.deepEqual(versions(newLine), [`mail:next:${v2}`, `data:reject:${v2}`]);
    } finally {
      old.s.close();
    }
    assert.equal((await api(a, 'DELETE', '/v1/rules/pinned')).status, 204);
  });

  it('a rule PUT on A refuses at B within a second; deactivated on B, A lets it through; a rollback on B restores A', { timeout: 30_000 }, async () => {
    const before = (await api(a, 'GET', '/v1/rules')).json<{ version: number; rules: unknown[] }>();
    assert.deepEqual(before.rules, []);
    assert.match(await send(b, 'blockme'), /^250/);

    const put = await api(a, 'PUT', '/v1/rules/block', { script: reject('blocked everywhere') });
    assert.equal(put.status, 201);
    await within(Date.now(), 'rule from A enforced at B', () => send(b, 'blockme'), (r) => r === '550 5.7.1 blocked everywhere');

    const off = await api(b, 'PATCH', '/v1/rules/block', { active: false });
    assert.equal(off.status, 200);
    await within(Date.now(), 'deactivation at B seen at A', () => send(a, 'blockme'), (r) => r.startsWith('250'));
    const on = await api(a, 'PATCH', '/v1/rules/block', { active: true });
    await within(Date.now(), 'activation at A seen at B', () => send(b, 'blockme'), (r) => r === '550 5.7.1 blocked everywhere');

    const rb = await api(b, 'POST', `/v1/rules/versions/${before.version}/rollback`);
    assert.equal(rb.status, 200);
    await within(Date.now(), 'rollback at B seen at A', () => send(a, 'blockme'), (r) => r.startsWith('250'));
    assert.deepEqual((await api(a, 'GET', '/v1/rules')).json<{ rules: unknown[] }>().rules, []);
    // The versions list is one history for both nodes.
    const versions = (await api(a, 'GET', '/v1/rules/versions')).json<{ current: number; versions: { id: number }[] }>();
    assert.equal(versions.current, rb.json<{ id: number }>().id);
    assert.ok(versions.versions.some((v) => v.id === on.json<{ version: number }>().version));
  });

  it('a network added to policies/relay on A lets a client relay through B within a second', { timeout: 30_000 }, async () => {
    const rcpt = async (d: RunningDaemon) => {
      const { s, rcpt: reply } = await upToRcpt(d.ports.smtp!, 'someone@elsewhere.example');
      s.close();
      return reply;
    };
    assert.match(await rcpt(b), /^554 5\.7\.1/, 'no relaying before');
    const added = await api(a, 'POST', '/v1/policies/relay/networks', { cidr: '127.0.0.1/32' });
    assert.equal(added.status, 201);
    await within(Date.now(), 'network from A trusted at B', () => rcpt(b), (r) => r.startsWith('250'));
    assert.equal((await api(b, 'DELETE', `/v1/policies/relay/networks/${String(added.json().id)}`)).status, 204);
    await within(Date.now(), 'removal at B seen at A', () => rcpt(a), (r) => r.startsWith('554'));
  });
});
