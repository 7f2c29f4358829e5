// /v1/users, /v1/aliases, /v1/domains, /v1/users/{address}/sieve: the directory and the users'
// Sieve scripts (ManageSieve's keys), in-process against the real store-backed directory.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { getActiveScript } from '../../src/managesieve/repository.js';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

describe('/v1/users', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  it('PUT creates a user (201) whose password works; the answer never shows it', async () => {
    const r = await api.call({ method: 'PUT', url: '/v1/users/Alice@Example.Test', body: { password: 's3cret' }, token: WRITER });
    assert.equal(r.status, 201);
    assert.deepEqual(Object.keys(r.json()).sort(), ['address', 'created_at', 'password_set']);
    assert.equal(r.json().address, 'alice@example.test');
    assert.ok(!r.body.includes('s3cret') && !r.body.includes('scrypt'));
    assert.equal(await api.ctx.directory!.authenticate('alice@example.test', 's3cret'), 'alice@example.test');
    const list = await api.call({ url: '/v1/users', token: READER });
    assert.deepEqual(list.json<{ users: { address: string }[] }>().users.map((u) => u.address), ['alice@example.test']);
  });

  it('PUT on an existing user changes the password (200, new ETag); If-Match guards it', async () => {
    const cur = await api.call({ url: '/v1/users/alice@example.test' });
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/alice@example.test', body: { password: 'x' }, headers: { 'if-match': '"nope"' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/alice@example.test', body: { password: 'x' }, headers: { 'if-none-match': '*' } }), 412, 'precondition-failed');
    const r = await api.call({ method: 'PUT', url: '/v1/users/alice@example.test', body: { password: 'n3w' }, headers: { 'if-match': String(cur.headers.etag) } });
    assert.equal(r.status, 200);
    assert.notEqual(r.headers.etag, cur.headers.etag);
    assert.equal(await api.ctx.directory!.authenticate('alice@example.test', 'n3w'), 'alice@example.test');
  });

  it('400 for a bad body or address, 422 outside the local domains, 401/403, 404', async () => {
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/bob@example.test', body: { password: '' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/bob@example.test', body: { pass: 'x' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/no-at-sign', body: { password: 'x' } }), 400, 'bad-request');
    const p = assertProblem(await api.call({ method: 'PUT', url: '/v1/users/bob@elsewhere.example', body: { password: 'x' } }), 422, 'unprocessable');
    assert.match(String(p.detail), /elsewhere\.example/);
    assertProblem(await api.call({ url: '/v1/users', token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/users/bob@example.test', body: { password: 'x' }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ url: '/v1/users/bob@example.test' }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/users/bob@example.test' }), 404, 'not-found');
  });

  it('users/{address}/sieve: PUT compiles (422 with line/column), stores where ManageSieve reads, activates; the active one cannot be deleted (409)', async () => {
    const base = '/v1/users/alice@example.test/sieve';
    const bad = assertProblem(await api.call({ method: 'PUT', url: `${base}/main`, body: { script: 'if true {\n  fileinto "x";\n}\n' } }), 422, 'invalid-sieve');
    assert.equal((bad.errors as { line: number }[])[0]!.line, 2);
    const r = await api.call({ method: 'PUT', url: `${base}/main`, body: { script: 'require "fileinto";\nfileinto "Archive";\n', active: true }, token: WRITER });
    assert.equal(r.status, 201);
    assert.deepEqual(r.json(), { name: 'main', script: 'require "fileinto";\nfileinto "Archive";\n', active: true });
    assert.deepEqual(await getActiveScript(api.store, 'alice@example.test'), { name: 'main', script: 'require "fileinto";\nfileinto "Archive";\n' });
    const list = await api.call({ url: base, token: READER });
    assert.deepEqual(list.json(), { active: 'main', scripts: [{ name: 'main', active: true }] });
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/main` }), 409, 'conflict');
    const off = await api.call({ method: 'PUT', url: `${base}/main`, body: { script: 'keep;\n', active: false } });
    assert.equal(off.status, 200);
    assert.equal(off.json().active, false);
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/main`, headers: { 'if-match': String(r.headers.etag) } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/main` })).status, 204);
    assertProblem(await api.call({ url: `${base}/main` }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/users/nobody@example.test/sieve' }), 404, 'not-found');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/x`, body: { script: 'keep;' }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/x`, body: {} }), 400, 'bad-request');
  });

  it('DELETE removes the user (If-Match honoured)', async () => {
    const cur = await api.call({ url: '/v1/users/alice@example.test' });
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/users/alice@example.test', headers: { 'if-match': '"old"' } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: '/v1/users/alice@example.test', headers: { 'if-match': String(cur.headers.etag) } })).status, 204);
    assert.equal(await api.ctx.directory!.getUser('alice@example.test'), null);
  });
});

describe('/v1/aliases and /v1/domains', () => {
  let api: TestApi;
  before(async () => {
    api = await startApi();
    await api.ctx.directory!.addUser('carol@example.test', 'pw');
  });
  after(() => api.close());

  it('aliases: PUT creates (201) and replaces (200), resolution follows, DELETE removes', async () => {
    const r = await api.call({ method: 'PUT', url: '/v1/aliases/team@example.test', body: { targets: ['carol@example.test', 'ext@remote.example'] } });
    assert.equal(r.status, 201);
    assert.deepEqual(r.json(), { address: 'team@example.test', targets: ['carol@example.test', 'ext@remote.example'] });
    assert.deepEqual(await api.ctx.directory!.resolve('team@example.test'), { kind: 'alias', targets: ['carol@example.test', 'ext@remote.example'] });
    const again = await api.call({ method: 'PUT', url: '/v1/aliases/team@example.test', body: { targets: ['carol@example.test'] }, headers: { 'if-match': String(r.headers.etag) } });
    assert.equal(again.status, 200);
    assert.deepEqual((await api.call({ url: '/v1/aliases', token: READER })).json(), { aliases: [{ address: 'team@example.test', targets: ['carol@example.test'] }] });
    assertProblem(await api.call({ method: 'PUT', url: '/v1/aliases/team@example.test', body: { targets: ['x@y.example'] }, headers: { 'if-match': String(r.headers.etag) } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/aliases/team@example.test', body: { targets: [] } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/aliases/team@other.example', body: { targets: ['carol@example.test'] } }), 422, 'unprocessable');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/aliases/team@example.test', body: { targets: ['carol@example.test'] }, token: READER }), 403, 'forbidden');
    assert.equal((await api.call({ method: 'DELETE', url: '/v1/aliases/team@example.test', token: WRITER })).status, 204);
    assertProblem(await api.call({ url: '/v1/aliases/team@example.test' }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/aliases/team@example.test' }), 404, 'not-found');
  });

  it('domains: the local domains with their catch-all, which PUT and DELETE set and clear', async () => {
    assert.deepEqual((await api.call({ url: '/v1/domains', token: READER })).json(), { domains: [{ name: 'example.test', catch_all: null }] });
    const d = await api.call({ url: '/v1/domains/example.test' });
    const r = await api.call({ method: 'PUT', url: '/v1/domains/example.test/catch-all', body: { target: 'carol@example.test' }, headers: { 'if-match': String(d.headers.etag) } });
    assert.deepEqual(r.json(), { name: 'example.test', catch_all: 'carol@example.test' });
    assert.deepEqual(await api.ctx.directory!.resolve('whoever@example.test'), { kind: 'alias', targets: ['carol@example.test'] });
    assertProblem(await api.call({ method: 'PUT', url: '/v1/domains/example.test/catch-all', body: { target: 'x@example.test' }, headers: { 'if-match': String(d.headers.etag) } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: '/v1/domains/example.test/catch-all' })).status, 204);
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/domains/example.test/catch-all' }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/domains/other.example' }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/domains/bad_domain!' }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/domains/example.test/catch-all', body: { target: 'carol@example.test' }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'PUT', url: '/v1/domains/example.test/catch-all', body: {} }), 400, 'bad-request');
  });
});
