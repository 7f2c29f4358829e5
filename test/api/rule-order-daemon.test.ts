// Admin rules run in their order (name order unless ordered otherwise) through a real `postern
// start` with the API: SMTP and the dry-run (POST /v1/test) of the same daemon give the answer of
// in-order evaluation, even when a later rule asks only envelope questions and so could have been
// decided at RCPT, before the rules ordered ahead of it had seen the message.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { openSmtp } from '../helpers/smtp-client.js';
import { waitFor } from '../helpers/wait.js';
import { daemonApi } from './harness.js';

const TOKEN = 'rule-order-token-0123456789';
const AAA = 'require "reject";\nif header :contains "subject" "order" { reject "from aaa"; }\n';
const ZZZ = 'require ["reject", "envelope"];\nif envelope :is "from" "order@b.example" { reject "from zzz"; }\n';
// The common pattern: an early rule lets a partner through (keep; stop;), a later one refuses its domain.
const ALLOW = 'if address :is "from" "boss@partner.example" { keep; stop; }\n';
const BLOCK = 'require ["reject", "envelope"];\nif envelope :domain "from" "partner.example" { reject "partner.example is blocked"; }\n';

interface Sent {
  rcpt: string;
  data?: string;
}

describe('admin rules in their order, through SMTP and the dry-run of a running daemon', () => {
  let d: RunningDaemon;
  let api: ReturnType<typeof daemonApi>;

  before(async () => {
    d = await startDaemon(
      {
        listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
        relay: { networks: [] },
        plugins: ['relay-acl', 'sieve'],
        api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'admin' }] },
      },
      { timeoutMs: 60_000 },
    );
    api = daemonApi(d.ports.api!, TOKEN);
    assert.equal((await d.cli(['user', 'add', 'bob@example.test', '--password-stdin'], 'pw\n')).code, 0);
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  /** One SMTP transaction; the RCPT reply and, when accepted, the DATA reply. */
  const send = async (from: string, subject: string, header = from): Promise<Sent> => {
    const s = await openSmtp(d.ports.smtp!);
    try {
      await s.expect('220');
      await s.cmd('EHLO client.example', '250');
      await s.cmd(`MAIL FROM:<${from}>`, '250');
      s.send('RCPT TO:<bob@example.test>');
      const rcpt = (await s.reply())!;
      if (!rcpt.startsWith('250')) return { rcpt };
      await s.cmd('DATA', '354');
      s.send(`From: ${header}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nhello\r\n.`);
      return { rcpt, data: (await s.reply())! };
    } finally {
      s.close();
    }
  };
  const refused = (r: Sent) => !r.rcpt.startsWith('250') || (r.data?.startsWith('550') ?? false);
  const dry = async (from: string, subject: string) => {
    const message = `From: ${from}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nhello\r\n`;
    const r = await api('POST', '/v1/test', { envelope: { client: '127.0.0.1', helo: 'client.example', from, to: ['bob@example.test'], auth: null }, message });
    return r.json<{ recipients: { reply: string }[]; trace: { stage: string; plugin: string; rule?: string; verdict: string }[] }>();
  };
  /** PUTs the rules (in the order given), runs `fn`, then deletes them again. */
  const withRules = async (rules: Record<string, string>, fn: () => Promise<void>) => {
    try {
      for (const [name, script] of Object.entries(rules)) assert.equal((await api('PUT', `/v1/rules/${name}`, { script })).status, 201);
      await fn();
    } finally {
      for (const name of Object.keys(rules)) await api('DELETE', `/v1/rules/${name}`);
    }
  };
  const stages = async () => (await api('GET', '/v1/rules')).json<{ rules: { name: string; stage: string; position: number }[] }>().rules.map((r) => `${r.stage}:${r.position}:${r.name}`);

  it('aaa (reads the message) acts before zzz (envelope only): 550 from aaa at DATA, in SMTP and in the dry-run', async () => {
    await withRules({ aaa: AAA, zzz: ZZZ }, async () => {
      // The rules channel event reaches the daemon's sieve plugin on a later turn.
      const r = await waitFor(() => send('order@b.example', 'order test'), refused);
      assert.deepEqual(r, { rcpt: '250 2.1.5 Accepted', data: '550 5.7.1 from aaa' });
      const dr = await dry('order@b.example', 'order test');
      assert.deepEqual(
        dr.recipients.map((x) => x.reply),
        ['550 5.7.1 from aaa'],
      );
      assert.deepEqual(
        dr.trace.filter((t) => t.plugin === 'sieve' && t.rule).map((t) => `${t.stage}:${t.rule}:${t.verdict}`),
        ['data:aaa:reject'],
      );
      // zzz still acts when aaa does not, at DATA, where it runs; the API says so.
      assert.deepEqual(await send('order@b.example', 'hello'), { rcpt: '250 2.1.5 Accepted', data: '550 5.7.1 from zzz' });
      assert.equal((await dry('order@b.example', 'hello')).recipients[0]!.reply, '550 5.7.1 from zzz');
      assert.deepEqual(await stages(), ['data:1:aaa', 'data:2:zzz']);
    });
  });

  it('an earlier rule that lets a sender through (keep; stop;) wins over a later envelope-only reject', async () => {
    await withRules({ '10-allow-boss': ALLOW, '20-block-partner': BLOCK }, async () => {
      // The dry-run runs the daemon's own plugin: once it refuses, SMTP runs the new rules too.
      const other = await waitFor(() => dry('other@partner.example', 'hi'), (r) => r.recipients[0]!.reply.startsWith('550'));
      assert.equal(other.recipients[0]!.reply, '550 5.7.1 partner.example is blocked');
      const boss = await send('boss@partner.example', 'hi');
      assert.equal(boss.rcpt, '250 2.1.5 Accepted');
      assert.match(boss.data!, /^250 /);
      assert.match((await dry('boss@partner.example', 'hi')).recipients[0]!.reply, /^250 /);
      assert.deepEqual(await send('other@partner.example', 'hi'), { rcpt: '250 2.1.5 Accepted', data: '550 5.7.1 partner.example is blocked' });
      assert.deepEqual(await stages(), ['data:1:10-allow-boss', 'data:2:20-block-partner']);
    });
  });
});
