// Stage, position and activation of the admin rules (PUT settings, PATCH /v1/rules/{name},
// GET/PUT /v1/rules/stages/{stage}), through the in-process API, with their effect seen in the
// dry-run (the same plugin chain the daemon runs): rules run in name order unless ordered
// otherwise, inactive rules do not run, order decides which rule acts first, the stage follows
// from the order (rcpt, refusing at RCPT, only for the envelope-only rules that lead it, after
// the sieve plugin's own files), and a rollback restores order and activation.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

const FOLDER_A = 'require "fileinto";\nif header :contains "subject" "sort" { fileinto "A"; }\n';
const FOLDER_B = 'require "fileinto";\nif header :contains "subject" "sort" { fileinto "B"; }\n';
const NO_MALLORY = 'require ["reject", "envelope"];\nif envelope :localpart "from" "mallory" { reject "not you"; }\n';
const MESSAGE = 'From: a@sender.example\r\nTo: alice@example.test\r\nSubject: please sort me\r\n\r\nhello\r\n';

interface RuleView {
  name: string;
  stage: string;
  position: number;
  active: boolean;
  version?: number;
}
interface DryRun {
  recipients: { address: string; outcome: string; reply: string; delivery?: { folders?: string[] } }[];
  trace: { stage: string; plugin: string; verdict: string; rule?: string; version?: string }[];
}

describe('/v1/rules: stage, position, activation', () => {
  let api: TestApi;
  before(async () => {
    api = await startApi();
    await api.ctx.directory!.addUser('alice@example.test', 'pw');
  });
  after(() => api.close());

  const dry = async (from = 'a@sender.example', message = MESSAGE) =>
    (await api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client: '127.0.0.1', helo: 'client.example', from, to: ['alice@example.test'], auth: null }, message } })).json<DryRun>();
  const folders = async () => (await dry()).recipients[0]!.delivery?.folders;
  const list = async () => (await api.call({ url: '/v1/rules', token: READER })).json<{ version: number; rules: RuleView[] }>();
  const names = async () => (await list()).rules.map((r) => `${r.stage}:${r.position}:${r.name}${r.active ? '' : ' (off)'}`);

  it('PUT without settings: name order, active; an envelope-only rule is at stage rcpt only when the rules before it are too', async () => {
    const b = await api.call({ method: 'PUT', url: '/v1/rules/b-tag', body: { script: FOLDER_B }, token: WRITER });
    assert.equal(b.status, 201);
    assert.deepEqual({ ...b.json<RuleView>(), version: undefined, script: undefined }, { name: 'b-tag', stage: 'data', position: 1, active: true, version: undefined, script: undefined });
    await api.call({ method: 'PUT', url: '/v1/rules/a-tag', body: { script: FOLDER_A } });
    const put = await api.call({ method: 'PUT', url: '/v1/rules/no-mallory', body: { script: NO_MALLORY } });
    assert.equal(put.status, 201);
    assert.equal(put.json<RuleView>().stage, 'data');
    assert.deepEqual(await names(), ['data:1:a-tag', 'data:2:b-tag', 'data:3:no-mallory']);
    assert.deepEqual(await folders(), ['A']);
    // Moved ahead of the rules that read the message, it is decided at RCPT.
    const moved = await api.call({ method: 'PATCH', url: '/v1/rules/no-mallory', body: { stage: 'rcpt' } });
    assert.equal(moved.status, 200);
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag', 'data:2:b-tag']);
    const stage = await api.call({ url: '/v1/rules/stages/rcpt', token: READER });
    assert.equal(stage.status, 200);
    assert.deepEqual(
      stage.json<{ rules: RuleView[] }>().rules.map((r) => r.name),
      ['no-mallory'],
    );
  });

  it('a stage-rcpt rule refuses at RCPT; moved after a rule that reads the message, it runs at DATA, after that rule', async () => {
    let r = await dry('mallory@evil.example');
    assert.deepEqual(r.recipients.map((x) => x.reply), ['550 5.7.1 not you']);
    assert.ok(r.trace.some((t) => t.stage === 'rcpt' && t.plugin === 'sieve' && t.rule === 'no-mallory' && t.verdict === 'reject'), JSON.stringify(r.trace));
    // First at stage data it would still lead the list, and so be decided at RCPT: refused.
    const p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/no-mallory', body: { stage: 'data', position: 1 } }), 422, 'unprocessable');
    assert.match(String(p.detail), /no-mallory would be at stage rcpt: it asks only envelope questions.*put it after a rule of stage data/);
    const moved = await api.call({ method: 'PATCH', url: '/v1/rules/no-mallory', body: { stage: 'data', position: 2 } });
    assert.equal(moved.status, 200);
    assert.deepEqual(await names(), ['data:1:a-tag', 'data:2:no-mallory', 'data:3:b-tag']);
    // a-tag acts first: its fileinto ends the run, so no-mallory does not refuse this message.
    r = await dry('mallory@evil.example');
    assert.deepEqual(r.recipients.map((x) => [x.outcome, x.delivery?.folders]), [['accepted', ['A']]]);
    assert.ok(!r.trace.some((t) => t.rule === 'no-mallory'), 'not reached');
    r = await dry('mallory@evil.example', MESSAGE.replace('please sort me', 'hello'));
    assert.deepEqual(r.recipients.map((x) => x.reply), ['550 5.7.1 not you']);
    assert.ok(!r.trace.some((t) => t.stage === 'rcpt' && t.rule === 'no-mallory'), 'no longer run at RCPT');
    assert.ok(r.trace.some((t) => t.stage === 'data' && t.rule === 'no-mallory' && t.verdict === 'reject'));
    await api.call({ method: 'PATCH', url: '/v1/rules/no-mallory', body: { stage: 'rcpt' } });
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag', 'data:2:b-tag']);
  });

  it('order decides which rule acts first: PUT /v1/rules/stages/data and PATCH position', async () => {
    const cur = await api.call({ url: '/v1/rules/stages/data' });
    const r = await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['b-tag', 'a-tag'] }, headers: { 'if-match': String(cur.headers.etag) }, token: WRITER });
    assert.equal(r.status, 200);
    const body = r.json<{ stage: string; version: number; rules: RuleView[] }>();
    assert.deepEqual(
      body.rules.map((x) => [x.name, x.position]),
      [
        ['b-tag', 1],
        ['a-tag', 2],
      ],
    );
    assert.equal(body.version, (await list()).version);
    assert.notEqual(r.headers.etag, cur.headers.etag);
    assert.deepEqual(await folders(), ['B']);
    await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 1 } });
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag', 'data:2:b-tag']);
    assert.deepEqual(await folders(), ['A']);
  });

  it('an inactive rule keeps its place but does not run; activating it brings it back', async () => {
    const off = await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: false } });
    assert.equal(off.json<RuleView>().active, false);
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag (off)', 'data:2:b-tag']);
    assert.deepEqual(await folders(), ['B']);
    await api.call({ method: 'PATCH', url: '/v1/rules/b-tag', body: { active: false } });
    assert.deepEqual(await folders(), ['INBOX'], 'no rule acts: the implicit keep');
    // Replacing the script keeps the settings that are not given.
    const put = await api.call({ method: 'PUT', url: '/v1/rules/b-tag', body: { script: FOLDER_B + '# v2\n' } });
    assert.deepEqual([put.json<RuleView>().active, put.json<RuleView>().position], [false, 2]);
    await api.call({ method: 'PATCH', url: '/v1/rules/b-tag', body: { active: true } });
    assert.deepEqual(await folders(), ['B']);
  });

  it('a rollback restores order and activation with the scripts', async () => {
    const before = await list();
    const snapshot = await names();
    await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['b-tag', 'a-tag'] } });
    await api.call({ method: 'PATCH', url: '/v1/rules/b-tag', body: { active: false } });
    await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: true } });
    assert.deepEqual(await folders(), ['A']);
    const versions = (await api.call({ url: '/v1/rules/versions' })).json<{ versions: { id: number; change: { op: string; stage?: string; name?: string } }[] }>().versions;
    assert.deepEqual(versions[2]!.change, { op: 'order', stage: 'data' });
    assert.deepEqual(versions[1]!.change, { op: 'settings', name: 'b-tag' });
    const rb = await api.call({ method: 'POST', url: `/v1/rules/versions/${before.version}/rollback` });
    assert.equal(rb.status, 200);
    assert.deepEqual(await names(), snapshot);
    assert.deepEqual(await folders(), ['B']);
  });

  it('PUT may place a new rule: stage and position given, the others shift', async () => {
    const r = await api.call({ method: 'PUT', url: '/v1/rules/z-first', body: { script: FOLDER_A, stage: 'data', position: 1, active: false } });
    assert.equal(r.status, 201);
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:z-first (off)', 'data:2:a-tag (off)', 'data:3:b-tag']);
    assert.equal((await api.call({ method: 'DELETE', url: '/v1/rules/z-first' })).status, 204);
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag (off)', 'data:2:b-tag']);
  });

  it('422: a script that reads the message cannot be at stage rcpt; a position past the end; an order that is not the stage', async () => {
    const version = (await list()).version;
    let p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { stage: 'rcpt' } }), 422, 'unprocessable');
    assert.match(String(p.detail), /a-tag would be at stage rcpt.*reads the message/);
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/no-mallory', body: { script: FOLDER_A, stage: 'rcpt' } }), 422, 'unprocessable');
    assert.match(String(p.detail), /no-mallory would be at stage rcpt/);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/new-one', body: { script: FOLDER_A, stage: 'rcpt' } }), 422, 'unprocessable');
    p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 3 } }), 422, 'unprocessable');
    assert.match(String(p.detail), /position 3 is past the end of the stage \(1 to 2\)/);
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { stage: 'rcpt', position: 3 } }), 422, 'unprocessable');
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag'] } }), 422, 'unprocessable');
    assert.match(String(p.detail), /missing: b-tag/);
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag', 'b-tag', 'no-mallory'] } }), 422, 'unprocessable');
    assert.match(String(p.detail), /not at stage data: no-mallory/);
    assert.equal((await list()).version, version, 'nothing stored');
    assert.equal(await api.store.hget('sieve:rules', 'new-one'), null);
  });

  it('400 for bad bodies, 401 without a token, 403 for a read token, 404 for a missing rule or stage', async () => {
    let p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: {} }), 400, 'bad-request');
    assert.match(String(p.detail), /at least one of stage, position, active/);
    p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { stage: 'queue' } }), 400, 'bad-request');
    assert.deepEqual((p.errors as { pointer: string }[]).map((e) => e.pointer), ['/body/stage']);
    p = assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 0 } }), 400, 'bad-request');
    assert.match(String(p.detail), /positions start at 1/);
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 1.5 } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: 'no' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: true, script: 'keep;' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: { script: FOLDER_A, position: -1 } }), 400, 'bad-request');
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag', 'a-tag', 'b-tag'] } }), 400, 'bad-request');
    assert.match(String(p.detail), /named twice/);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['../x'] } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: {} }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', payload: 'active', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported-media-type');

    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: true }, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ url: '/v1/rules/stages/data', token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: [] }, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: true }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag', 'b-tag'] }, token: READER }), 403, 'forbidden');

    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/missing', body: { active: true } }), 404, 'not-found');
    p = assertProblem(await api.call({ url: '/v1/rules/stages/queue' }), 404, 'not-found');
    assert.match(String(p.detail), /stages are rcpt, data/);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/queue', body: { order: [] } }), 404, 'not-found');
  });

  it('412 on a stale If-Match for PATCH and a stage reorder; a reorder makes the moved rules stale', async () => {
    const rule = await api.call({ url: '/v1/rules/a-tag' });
    const stage = await api.call({ url: '/v1/rules/stages/data' });
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: true }, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/missing', body: { active: true }, headers: { 'if-match': String(rule.headers.etag) } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['b-tag', 'a-tag'] }, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    const ok = await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['b-tag', 'a-tag'] }, headers: { 'if-match': String(stage.headers.etag) } });
    assert.equal(ok.status, 200);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag', 'b-tag'] }, headers: { 'if-match': String(stage.headers.etag) } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 1 }, headers: { 'if-match': String(rule.headers.etag) } }), 412, 'precondition-failed');
    const fresh = await api.call({ url: '/v1/rules/a-tag' });
    const moved = await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { position: 1 }, headers: { 'if-match': String(fresh.headers.etag) } });
    assert.equal(moved.status, 200);
    assert.equal(moved.headers.etag, (await api.call({ url: '/v1/rules/a-tag' })).headers.etag);
  });

  it('409 while another writer holds the rule-set lock', async () => {
    await api.store.set('sieve:rules:lock', 'someone-else', { ttlMs: 60_000 });
    try {
      assertProblem(await api.call({ method: 'PATCH', url: '/v1/rules/a-tag', body: { active: false } }), 409, 'conflict');
      assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['a-tag', 'b-tag'] } }), 409, 'conflict');
    } finally {
      await api.store.del('sieve:rules:lock');
    }
  });
});

describe('/v1/rules: the stage follows from the order, and the dry-run answers as in-order evaluation', () => {
  const AAA = 'require "reject";\nif header :contains "subject" "order" { reject "from aaa"; }\n';
  const ZZZ = 'require ["reject", "envelope"];\nif envelope :is "from" "order@b.example" { reject "from zzz"; }\n';
  const ALLOW = 'if address :is "from" "boss@partner.example" { keep; stop; }\n';
  const BLOCK = 'require ["reject", "envelope"];\nif envelope :domain "from" "partner.example" { reject "partner.example is blocked"; }\n';
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-rule-order-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const open = async (plugins: unknown[] = ['relay-acl', 'sieve']) => {
    const api = await startApi({ plugins });
    await api.ctx.directory!.addUser('bob@example.test', 'pw');
    const put = async (name: string, script: string, extra: Record<string, unknown> = {}) => api.call({ method: 'PUT', url: `/v1/rules/${name}`, body: { script, ...extra } });
    const dry = async (from: string, subject: string) => {
      const message = `From: ${from}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nhello\r\n`;
      return (await api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client: '127.0.0.1', helo: 'client.example', from, to: ['bob@example.test'], auth: null }, message } })).json<DryRun>();
    };
    const rules = async () => (await api.call({ url: '/v1/rules' })).json<{ rules: RuleView[] }>().rules.map((r) => `${r.stage}:${r.position}:${r.name}`);
    const acted = (r: DryRun) => r.trace.filter((t) => t.plugin === 'sieve' && t.rule).map((t) => `${t.stage}:${t.rule}:${t.verdict}`);
    return { api, put, dry, rules, acted };
  };

  it('aaa, which reads the message, acts before zzz, envelope only: 550 from aaa at DATA, whichever was PUT first', async () => {
    for (const order of [['aaa', 'zzz'], ['zzz', 'aaa']]) {
      const { api, put, dry, rules, acted } = await open();
      try {
        for (const name of order) assert.equal((await put(name, name === 'aaa' ? AAA : ZZZ)).status, 201);
        const r = await dry('order@b.example', 'order test');
        assert.deepEqual(r.recipients.map((x) => x.reply), ['550 5.7.1 from aaa'], order.join());
        assert.deepEqual(acted(r), ['data:aaa:reject']);
        assert.deepEqual(await rules(), ['data:1:aaa', 'data:2:zzz']);
        assert.deepEqual((await dry('order@b.example', 'hello')).recipients.map((x) => x.reply), ['550 5.7.1 from zzz']);
      } finally {
        await api.close();
      }
    }
  });

  it('an earlier rule that lets a sender through (keep; stop;) wins over a later envelope-only reject', async () => {
    const { api, put, dry, acted } = await open();
    try {
      await put('20-block-partner', BLOCK);
      await put('10-allow-boss', ALLOW);
      const boss = await dry('boss@partner.example', 'hi');
      assert.deepEqual(boss.recipients.map((x) => [x.outcome, x.delivery?.folders]), [['accepted', ['INBOX']]]);
      assert.deepEqual(acted(boss), ['data:10-allow-boss:next']);
      assert.deepEqual((await dry('other@partner.example', 'hi')).recipients.map((x) => x.reply), ['550 5.7.1 partner.example is blocked']);
    } finally {
      await api.close();
    }
  });

  it('a reorder that puts an envelope-only rule first at stage data makes it stage rcpt, and the answer says so', async () => {
    const { api, put, rules } = await open();
    try {
      await put('aaa', AAA);
      await put('zzz', ZZZ);
      const r = await api.call({ method: 'PUT', url: '/v1/rules/stages/data', body: { order: ['zzz', 'aaa'] } });
      assert.equal(r.status, 200);
      assert.deepEqual(
        r.json<{ rules: RuleView[] }>().rules.map((x) => x.name),
        ['aaa'],
      );
      assert.equal(r.headers.etag, (await api.call({ url: '/v1/rules/stages/data' })).headers.etag);
      assert.deepEqual(await rules(), ['rcpt:1:zzz', 'data:1:aaa']);
    } finally {
      await api.close();
    }
  });

  it("after the sieve plugin's files: a file that reads the message keeps every store rule at DATA", async () => {
    const reads = join(dir, 'reads.sieve');
    const envelope = join(dir, 'envelope.sieve');
    await writeFile(reads, 'if header :contains "subject" "never-seen" { discard; }\n');
    await writeFile(envelope, 'require "envelope";\nif envelope :is "from" "never@seen.example" { discard; }\n');
    let t = await open(['relay-acl', { sieve: { scripts: [reads] } }]);
    try {
      await t.put('zzz', ZZZ);
      assert.deepEqual(await t.rules(), ['data:1:zzz']);
      const p = assertProblem(await t.put('zzz', ZZZ, { stage: 'rcpt' }), 422, 'unprocessable');
      assert.match(String(p.detail), /zzz cannot be at stage rcpt: the sieve plugin's files/);
      assert.deepEqual(t.acted(await t.dry('order@b.example', 'hello')), ['data:zzz:reject']);
    } finally {
      await t.api.close();
    }
    t = await open(['relay-acl', { sieve: { scripts: [envelope] } }]);
    try {
      await t.put('zzz', ZZZ);
      assert.deepEqual(await t.rules(), ['rcpt:1:zzz']);
      assert.deepEqual(t.acted(await t.dry('order@b.example', 'hello')), ['rcpt:zzz:reject']);
    } finally {
      await t.api.close();
    }
  });
});
