// /v1/rules and its versions, through the in-process API (every answer checked against openapi.yaml).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '../helpers/wait.js';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

const REJECT_SPAM = 'require "reject";\nif header :contains "subject" "spam" { reject "no spam"; }\n';
const DISCARD = 'if header :is "x-drop" "yes" { discard; }\n';

describe('/v1/rules', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  it('PUT creates (201), GET reads it back with the same ETag, PUT again replaces (200) with a new version', async () => {
    const put = await api.call({ method: 'PUT', url: '/v1/rules/10-spam', body: { script: REJECT_SPAM }, token: WRITER });
    assert.equal(put.status, 201);
    const created = put.json<{ name: string; script: string; version: number }>();
    assert.equal(created.name, '10-spam');
    assert.equal(created.script, REJECT_SPAM);
    assert.ok(created.version >= 1);
    assert.ok(put.headers.etag);
    assert.equal(put.headers.location, '/v1/rules/10-spam');

    const get = await api.call({ url: '/v1/rules/10-spam', token: READER });
    assert.equal(get.status, 200);
    assert.equal(get.headers.etag, put.headers.etag);
    assert.equal(get.json().version, created.version);
    // What plugins/sieve reads.
    assert.equal(await api.store.hget('sieve:rules', '10-spam'), REJECT_SPAM);

    const again = await api.call({ method: 'PUT', url: '/v1/rules/10-spam', body: { script: REJECT_SPAM + '# v2\n' }, token: WRITER });
    assert.equal(again.status, 200);
    assert.equal(again.json().version, created.version + 1);
    assert.notEqual(again.headers.etag, put.headers.etag);
  });

  it('GET /v1/rules lists every rule in name order with the live version', async () => {
    await api.call({ method: 'PUT', url: '/v1/rules/05-drop', body: { script: DISCARD } });
    const r = await api.call({ url: '/v1/rules', token: READER });
    assert.equal(r.status, 200);
    const body = r.json<{ version: number; rules: { name: string }[] }>();
    assert.deepEqual(
      body.rules.map((x) => x.name),
      ['05-drop', '10-spam'],
    );
    assert.equal(body.version, Number(await api.store.get('sieve:rules:version')));
  });

  it('a script that does not compile is 422 with line and column, and nothing is stored', async () => {
    const versionBefore = await api.store.get('sieve:rules:version');
    const r = await api.call({ method: 'PUT', url: '/v1/rules/bad', body: { script: 'require "fileinto";\nif true {\n  filein "x";\n}\n' } });
    const p = assertProblem(r, 422, 'invalid-sieve');
    const errors = p.errors as { line: number; column: number; message: string }[];
    assert.equal(errors[0]!.line, 3);
    assert.equal(errors[0]!.column, 3);
    assert.match(errors[0]!.message, /filein/);
    assert.equal(await api.store.hget('sieve:rules', 'bad'), null);
    assert.equal(await api.store.get('sieve:rules:version'), versionBefore);
    assertProblem(await api.call({ url: '/v1/rules/bad' }), 404, 'not-found');
  });

  it('400 for a bad body, a bad name, malformed JSON; 415 for a non-JSON body', async () => {
    let p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: {} }), 400, 'bad-request');
    assert.deepEqual((p.errors as { pointer: string }[]).map((e) => e.pointer), ['/body/script']);
    p = assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: { script: DISCARD, extra: 1 } }), 400, 'bad-request');
    assert.match(String(p.detail), /extra/);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: { script: '' } }), 400, 'bad-request');
    p = assertProblem(await api.call({ method: 'PUT', url: `/v1/rules/${'a'.repeat(65)}`, body: { script: DISCARD } }), 400, 'bad-request');
    assert.deepEqual((p.errors as { pointer: string }[]).map((e) => e.pointer), ['/path/name']);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/.hidden', body: { script: DISCARD } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', payload: '{"script": ', headers: { 'content-type': 'application/json' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', payload: 'keep;', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported-media-type');
    assert.equal(await api.store.hget('sieve:rules', 'x'), null);
  });

  it('401 without a token or with an unknown one; 403 for a read token on PUT and DELETE', async () => {
    const none = assertProblem(await api.call({ url: '/v1/rules', token: null }), 401, 'unauthorized');
    assert.ok(none.detail);
    const r = await api.call({ url: '/v1/rules', token: 'not-a-known-token-at-all' });
    assertProblem(r, 401, 'unauthorized');
    assert.match(String(r.headers['www-authenticate']), /^Bearer /);
    assertProblem(await api.call({ url: '/v1/rules', token: null, headers: { authorization: 'Basic YTpi' } }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: { script: DISCARD }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/rules/10-spam', token: READER }), 403, 'forbidden');
    assert.equal(await api.store.hget('sieve:rules', 'x'), null);
  });

  it('412 on a stale If-Match (PUT and DELETE), If-Match on a missing rule, If-None-Match: * on an existing one', async () => {
    const cur = await api.call({ url: '/v1/rules/05-drop' });
    const etag = String(cur.headers.etag);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/05-drop', body: { script: DISCARD + '# x\n' }, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/rules/05-drop', headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/nope', body: { script: DISCARD }, headers: { 'if-match': etag } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/05-drop', body: { script: DISCARD }, headers: { 'if-none-match': '*' } }), 412, 'precondition-failed');
    assert.equal(await api.store.hget('sieve:rules', '05-drop'), DISCARD);
    const ok = await api.call({ method: 'PUT', url: '/v1/rules/05-drop', body: { script: DISCARD + '# y\n' }, headers: { 'if-match': etag } });
    assert.equal(ok.status, 200);
    // The old tag is stale now.
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/rules/05-drop', headers: { 'if-match': etag } }), 412, 'precondition-failed');
    const del = await api.call({ method: 'DELETE', url: '/v1/rules/05-drop', headers: { 'if-match': String(ok.headers.etag) } });
    assert.equal(del.status, 204);
    assert.ok(Number(del.headers['x-rules-version']) > 0);
  });

  it('404 for a missing rule (GET, DELETE)', async () => {
    assertProblem(await api.call({ url: '/v1/rules/missing' }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/rules/missing' }), 404, 'not-found');
  });

  it('versions: every change is listed; a rollback makes a new version with the old rules', async () => {
    const list = await api.call({ url: '/v1/rules/versions', token: READER });
    assert.equal(list.status, 200);
    const { current, versions } = list.json<{ current: number; versions: { id: number; change: { op: string; name?: string }; rules: string[]; token: string }[] }>();
    assert.equal(versions[0]!.id, current);
    assert.deepEqual(versions[0]!.change, { op: 'delete', name: '05-drop' });
    assert.equal(versions[0]!.token, 'admin');
    const firstPut = [...versions].reverse().find((v) => v.change.op === 'put' && v.change.name === '10-spam' && v.rules.length === 1)!;
    assert.equal(firstPut.token, 'writer');

    const one = await api.call({ url: `/v1/rules/versions/${firstPut.id}` });
    assert.deepEqual(one.json<{ rules: unknown[] }>().rules, [{ name: '10-spam', script: REJECT_SPAM, stage: 'data', position: 1, active: true }]);

    const rb = await api.call({ method: 'POST', url: `/v1/rules/versions/${firstPut.id}/rollback`, token: WRITER });
    assert.equal(rb.status, 200);
    const nv = rb.json<{ id: number; change: unknown; rules: string[] }>();
    assert.equal(nv.id, current + 1);
    assert.deepEqual(nv.change, { op: 'rollback', to: firstPut.id });
    assert.equal(await api.store.hget('sieve:rules', '10-spam'), REJECT_SPAM);
    assert.equal(await api.store.get('sieve:rules:version'), String(nv.id));

    // Rolling back to the version that is live already is a conflict.
    assertProblem(await api.call({ method: 'POST', url: `/v1/rules/versions/${nv.id}/rollback` }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/rules/versions/99999/rollback' }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/rules/versions/99999' }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/rules/versions/abc' }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: `/v1/rules/versions/${firstPut.id}/rollback`, token: READER }), 403, 'forbidden');
  });

  it('409 while another writer holds the rule-set lock; nothing is stored', async () => {
    await api.store.set('sieve:rules:lock', 'someone-else', { ttlMs: 60_000 });
    try {
      assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/locked', body: { script: DISCARD } }), 409, 'conflict');
      assert.equal(await api.store.hget('sieve:rules', 'locked'), null);
    } finally {
      await api.store.del('sieve:rules:lock');
    }
  });

  it('a publish on the rules channel announces each change with its version', async () => {
    const events: string[] = [];
    const off = api.store.subscribe('rules', (e) => events.push(e.message));
    const r = await api.call({ method: 'PUT', url: '/v1/rules/20-more', body: { script: DISCARD } });
    await waitFor(() => events.length, (n) => n > 0);
    off();
    assert.deepEqual(events.map((e) => JSON.parse(e) as unknown), [{ version: r.json().version }]);
  });

  it('GET answers from a cache that a change made through another node drops (rules channel)', async () => {
    const other = await startApi({}, { store: api.store });
    try {
      const before = (await other.call({ url: '/v1/rules' })).json<{ version: number; rules: { name: string }[] }>();
      assert.deepEqual(await other.call({ url: '/v1/rules' }).then((r) => r.json()), before, 'the same answer again');
      const put = await api.call({ method: 'PUT', url: '/v1/rules/30-other-node', body: { script: DISCARD } });
      const seen = await waitFor(
        () => other.call({ url: '/v1/rules' }).then((r) => r.json<{ version: number; rules: { name: string }[] }>()),
        (b) => b.version === put.json().version,
      );
      assert.ok(seen.rules.some((r) => r.name === '30-other-node'));
      assert.equal((await other.call({ url: '/v1/rules/30-other-node' })).status, 200);
      await api.call({ method: 'DELETE', url: '/v1/rules/30-other-node' });
      await waitFor(
        () => other.call({ url: '/v1/rules/30-other-node' }).then((r) => r.status),
        (status) => status === 404,
      );
      assertProblem(await other.call({ url: '/v1/rules/30-other-node' }), 404, 'not-found');
    } finally {
      await other.close();
    }
  });

  it('the audit log has who, what, before and after', async () => {
    const r = await api.call({ url: '/v1/audit?resource=rules/10-spam&limit=5' });
    assert.equal(r.status, 200);
    const entries = r.json<{ entries: { token: string; action: string; before: unknown; after: { script: string } | null }[] }>().entries;
    const replaced = entries.find((e) => e.action === 'rules.put' && e.before !== null)!;
    assert.equal(replaced.token, 'writer');
    assert.deepEqual(replaced.before, { name: '10-spam', script: REJECT_SPAM, stage: 'data', position: 1, active: true });
    assert.equal(replaced.after!.script, REJECT_SPAM + '# v2\n');
    assertProblem(await api.call({ url: '/v1/audit', token: WRITER }), 403, 'forbidden');
    assertProblem(await api.call({ url: '/v1/audit?limit=0' }), 400, 'bad-request');
    assertProblem(await api.call({ url: '/v1/audit?since=yesterday' }), 400, 'bad-request');
  });
});

describe('/v1/rules with sieve.extensions', () => {
  let api: TestApi;
  before(async () => (api = await startApi({ sieve: { extensions: ['reject', 'envelope'] } })));
  after(() => api.close());

  it('a rule requiring an extension the config does not enable is 422 and not stored; an enabled one is stored', async () => {
    const r = await api.call({ method: 'PUT', url: '/v1/rules/file', body: { script: 'require "fileinto";\nfileinto "Junk";\n' }, token: WRITER });
    const p = assertProblem(r, 422, 'invalid-sieve');
    assert.deepEqual((p.errors as unknown[])[0], { line: 1, column: 9, message: 'extension "fileinto" is not enabled here (sieve.extensions)' });
    assert.equal(await api.store.hget('sieve:rules', 'file'), null);
    assert.equal((await api.call({ method: 'PUT', url: '/v1/rules/spam', body: { script: REJECT_SPAM }, token: WRITER })).status, 201);
  });
});
