// Stage, position and activation of the admin rules (PUT settings, PATCH /v1/rules/{name},
// GET/PUT /v1/rules/stages/{stage}), through the in-process API, with their effect seen in the
// dry-run (the same plugin chain the daemon runs): inactive rules do not run, order decides which
// rule acts first, stage rcpt refuses at RCPT, and a rollback restores order and activation.
import assert from 'node:assert/strict';
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

  const dry = async (from = 'a@sender.example') =>
    (await api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client: '127.0.0.1', helo: 'client.example', from, to: ['alice@example.test'], auth: null }, message: MESSAGE } })).json<DryRun>();
  const folders = async () => (await dry()).recipients[0]!.delivery?.folders;
  const list = async () => (await api.call({ url: '/v1/rules', token: READER })).json<{ version: number; rules: RuleView[] }>();
  const names = async () => (await list()).rules.map((r) => `${r.stage}:${r.position}:${r.name}${r.active ? '' : ' (off)'}`);

  it('PUT without settings: envelope-only scripts go to stage rcpt, others to data, in name order, active', async () => {
    const b = await api.call({ method: 'PUT', url: '/v1/rules/b-tag', body: { script: FOLDER_B }, token: WRITER });
    assert.equal(b.status, 201);
    assert.deepEqual({ ...b.json<RuleView>(), version: undefined, script: undefined }, { name: 'b-tag', stage: 'data', position: 1, active: true, version: undefined, script: undefined });
    await api.call({ method: 'PUT', url: '/v1/rules/a-tag', body: { script: FOLDER_A } });
    assert.equal((await api.call({ method: 'PUT', url: '/v1/rules/no-mallory', body: { script: NO_MALLORY } })).status, 201);
    assert.deepEqual(await names(), ['rcpt:1:no-mallory', 'data:1:a-tag', 'data:2:b-tag']);
    assert.deepEqual(await folders(), ['A']);
    const stage = await api.call({ url: '/v1/rules/stages/rcpt', token: READER });
    assert.equal(stage.status, 200);
    assert.deepEqual(
      stage.json<{ rules: RuleView[] }>().rules.map((r) => r.name),
      ['no-mallory'],
    );
  });

  it('a stage-rcpt rule refuses at RCPT; moved to data, the same rule refuses at DATA', async () => {
    let r = await dry('mallory@evil.example');
    assert.deepEqual(r.recipients.map((x) => x.reply), ['550 5.7.1 not you']);
    assert.ok(r.trace.some((t) => t.stage === 'rcpt' && t.plugin === 'sieve' && t.rule === 'no-mallory' && t.verdict === 'reject'), JSON.stringify(r.trace));
    const moved = await api.call({ method: 'PATCH', url: '/v1/rules/no-mallory', body: { stage: 'data', position: 1 } });
    assert.equal(moved.status, 200);
    assert.deepEqual(await names(), ['data:1:no-mallory', 'data:2:a-tag', 'data:3:b-tag']);
    r = await dry('mallory@evil.example');
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
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/no-mallory', body: { script: FOLDER_A } }), 422, 'unprocessable');
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
