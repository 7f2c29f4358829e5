// The README's REST API walk-through, run as written (bash, curl, jq) against a real daemon: only
// the API address is pointed at the test daemon's port. The admin token is the one the block
// uses, so the daemon's config carries the same.
import assert from 'node:assert/strict';
import { runCommand, type CommandResult } from '../helpers/run-command.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPO, removeDir, startDaemon, type RunningDaemon } from '../helpers/daemon.js';

const MARKER = '<!-- api-walkthrough';

async function walkthrough(): Promise<string> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const at = readme.indexOf(MARKER);
  assert.ok(at >= 0, 'README.md has no api-walkthrough block');
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, 'no ```sh block after the marker');
  return m[1]!;
}

function bash(script: string): Promise<CommandResult> {
  return runCommand('bash', ['-euo', 'pipefail', '-c', script]);
}

describe('README REST API walk-through', () => {
  let d: RunningDaemon;
  let block: string;
  let admin: string;
  before(async () => {
    block = await walkthrough();
    admin = /^ADMIN=(\S+)$/m.exec(block)![1]!;
    d = await startDaemon({
      listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
      plugins: ['relay-acl', 'sieve'],
      api: { tokens: [{ name: 'bootstrap', token: admin, scope: 'admin' }] },
      },
      { timeoutMs: 60_000 },
    );
  });
  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
  });

  it('runs every curl of the block successfully, with the outcomes the README describes', async () => {
    assert.match(block, /^API=http:\/\/127\.0\.0\.1:8025$/m);
    const script = block.replace(/^API=.*$/m, `API=http://127.0.0.1:${d.ports.api}`);
    const r = await bash(script);
    assert.equal(r.code, 0, `the walk-through failed: ${r.stderr}\n${r.stdout}`);
    // One JSON document per curl that prints: network, rule, dry-run, versions, rollback.
    const docs = r.stdout.replace(/\}\{/g, '}\n{').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(docs.length, 5, r.stdout);
    assert.equal(docs[0]!.cidr, '10.0.0.0/8');
    assert.equal(docs[1]!.name, 'no-casino');
    assert.equal(docs[1]!.version, 2);
    const dry = docs[2] as { recipients: unknown[]; trace: { plugin: string; rule?: string; line?: number; version?: string; matched?: unknown[] }[] };
    assert.deepEqual(dry.recipients, [{ address: 'b@example.org', outcome: 'rejected', reply: '550 5.7.1 no gambling' }]);
    const hit = dry.trace.find((t) => t.rule === 'no-casino')!;
    assert.equal(hit.line, 3);
    assert.equal(hit.version, '2');
    assert.deepEqual(hit.matched, [{ line: 2, test: 'header', header: 'subject', value: 'casino night' }]);
    assert.equal((docs[3] as { current: number }).current, 2);
    assert.deepEqual(docs[4]!.change, { op: 'rollback', to: 1 });
    assert.deepEqual(docs[4]!.rules, []);

    // The rollback took the rule away; the audit log names the token that did each step.
    const rules = await fetch(`http://127.0.0.1:${d.ports.api}/v1/rules`, { headers: { authorization: `Bearer ${admin}` } });
    assert.deepEqual(((await rules.json()) as { rules: unknown[] }).rules, []);
    const audit = await fetch(`http://127.0.0.1:${d.ports.api}/v1/audit`, { headers: { authorization: `Bearer ${admin}` } });
    const entries = ((await audit.json()) as { entries: { token: string; action: string }[] }).entries;
    assert.deepEqual(
      entries.map((e) => `${e.token} ${e.action}`),
      ['automation rules.rollback', 'automation rules.put', 'automation relay.network.add', 'bootstrap token.create'],
    );
  });
});
