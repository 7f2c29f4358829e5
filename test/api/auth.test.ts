// Tokens (config and store, scopes), the body and rate limits, /v1/tokens, health and metrics.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { createMemoryStore } from '../../src/store/memory.js';
import { fromObject } from '../../src/config/load.js';
import type { ConfigError } from '../../src/config/errors.js';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

describe('API tokens and limits', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  it('POST /v1/tokens (admin) makes a token that works at once with its scopes; the secret is shown once', async () => {
    const r = await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'ci', scopes: ['read'] } });
    assert.equal(r.status, 201);
    const t = r.json<{ id: string; name: string; token: string; scopes: string[]; created_by: string }>();
    assert.equal(t.created_by, 'admin');
    assert.deepEqual(t.scopes, ['read']);
    // Only a hash is stored.
    assert.ok(!(await api.store.hget('api:tokens', t.id))!.includes(t.token));
    assert.equal((await api.call({ url: '/v1/rules', token: t.token })).status, 200);
    assertProblem(await api.call({ method: 'PUT', url: '/v1/rules/x', body: { script: 'keep;' }, token: t.token }), 403, 'forbidden');
    const one = await api.call({ url: `/v1/tokens/${t.id}` });
    assert.equal(one.json().token, undefined);
    const list = await api.call({ url: '/v1/tokens' });
    assert.deepEqual(
      list.json<{ tokens: { name: string }[] }>().tokens.map((x) => x.name),
      ['ci'],
    );
  });

  it('409 for a name taken (config or store), 400 for a bad scope, 403 for a write token', async () => {
    assertProblem(await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'ci', scopes: ['read'] } }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'writer', scopes: ['read'] } }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'x', scopes: ['root'] } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'x', scopes: ['read'] }, token: WRITER }), 403, 'forbidden');
    assertProblem(await api.call({ url: '/v1/tokens', token: READER }), 403, 'forbidden');
  });

  it('DELETE revokes a token (If-Match honoured); the token stops working', async () => {
    const t = (await api.call({ method: 'POST', url: '/v1/tokens', body: { name: 'temp', scopes: ['write'] } })).json<{ id: string; token: string }>();
    assert.equal((await api.call({ url: '/v1/rules', token: t.token })).status, 200);
    assertProblem(await api.call({ method: 'DELETE', url: `/v1/tokens/${t.id}`, headers: { 'if-match': '"x"' } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: `/v1/tokens/${t.id}` })).status, 204);
    assertProblem(await api.call({ url: '/v1/rules', token: t.token }), 401, 'unauthorized');
    assertProblem(await api.call({ url: `/v1/tokens/${t.id}` }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: `/v1/tokens/${t.id}` }), 404, 'not-found');
    assertProblem(await api.call({ url: '/v1/tokens/nothex' }), 400, 'bad-request');
  });

  it('a config token given as token_hash works', async () => {
    const secret = 'hashed-secret-0123456789';
    const hashed = await startApi({ api: { tokens: [{ name: 'h', token_hash: `sha256:${createHash('sha256').update(secret).digest('hex')}`, scope: 'read' }] } });
    try {
      assert.equal((await hashed.call({ url: '/v1/rules', token: secret })).status, 200);
      assertProblem(await hashed.call({ url: '/v1/rules', token: `${secret}x` }), 401, 'unauthorized');
    } finally {
      await hashed.close();
    }
  });

  it('config: a token entry needs exactly one of token and token_hash, a well-formed hash, known scopes', () => {
    const problems = (tokens: unknown[]) => {
      try {
        fromObject({ api: { tokens } }, null);
        return [];
      } catch (e) {
        return (e as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
      }
    };
    assert.deepEqual(problems([{ name: 'x', scope: 'read' }]), ['api.tokens.0: give exactly one of token or token_hash']);
    assert.deepEqual(problems([{ token: 'x'.repeat(16), token_hash: `sha256:${'0'.repeat(64)}` }]), ['api.tokens.0: give exactly one of token or token_hash']);
    assert.match(problems([{ token_hash: 'md5:abc' }])[0]!, /^api\.tokens\.0\.token_hash: expected "sha256:"/);
    assert.match(problems([{ token: 'x'.repeat(16), scopes: ['read', 'root'] }])[0]!, /^api\.tokens\.0\.scopes\.1: /);
    assert.deepEqual(problems([{ token: 'x'.repeat(16), scopes: ['read', 'admin'] }]), []);
  });

  it('rate limit: over api.rate_limit.requests per window is 429 with Retry-After', async () => {
    const limited = await startApi({ api: { tokens: [{ token: READER, scope: 'read' }], rate_limit: { requests: 3, per: '1h' } } });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await limited.call({ url: '/v1/rules', token: READER })).status, 200);
      const r = await limited.call({ url: '/v1/rules', token: READER });
      assertProblem(r, 429, 'rate-limited');
      assert.ok(Number(r.headers['retry-after']) > 0);
      // Health is not limited.
      assert.equal((await limited.call({ url: '/healthz', token: null })).status, 200);
    } finally {
      await limited.close();
    }
  });

  it('body limit: a body over api.body_limit is 413 and nothing is stored', async () => {
    const small = await startApi({ api: { tokens: [{ token: WRITER, scope: 'write' }], body_limit: '1K' } });
    try {
      assertProblem(await small.call({ method: 'PUT', url: '/v1/rules/big', token: WRITER, body: { script: `# ${'x'.repeat(2000)}\nkeep;\n` } }), 413, 'payload-too-large');
      assert.equal(await small.store.hget('sieve:rules', 'big'), null);
    } finally {
      await small.close();
    }
  });

  it('unknown paths are 404 problems', async () => {
    assertProblem(await small404(api), 404, 'not-found');
  });
});

async function small404(api: TestApi) {
  const r = await api.app.inject({ url: '/v1/nothing-here' });
  return { status: r.statusCode, headers: r.headers, body: r.body, json: <T,>() => JSON.parse(r.body) as T };
}

describe('health, readiness, metrics, spec and docs', () => {
  it('/healthz and /readyz need no token; /readyz is 503 "degraded" when the store fails', async () => {
    const store = createMemoryStore();
    const api = await startApi({}, { store });
    try {
      assert.deepEqual((await api.call({ url: '/healthz', token: null })).json(), { status: 'ok' });
      assert.deepEqual((await api.call({ url: '/readyz', token: null })).json(), { status: 'ready', checks: { store: 'ok' } });
      await store.close();
      const r = await api.call({ url: '/readyz', token: null });
      assert.equal(r.status, 503);
      assert.equal(r.json().status, 'degraded');
    } finally {
      await api.close();
    }
  });

  it('/metrics is Prometheus text with the API and queue series; /openapi.yaml is the file; /docs is Swagger UI', async () => {
    const api = await startApi();
    try {
      await api.call({ url: '/v1/rules' });
      const m = await api.call({ url: '/metrics', token: null });
      assert.match(String(m.headers['content-type']), /^text\/plain/);
      assert.match(m.body, /^postern_api_requests_total\{method="GET",route="\/v1\/rules",status="200"\} 1$/m);
      assert.match(m.body, /^# TYPE postern_messages_total counter$/m);
      assert.match(m.body, /^postern_queue_targets\{state="deferred"\} 0$/m);
      const spec = await api.call({ url: '/openapi.yaml', token: null });
      assert.match(spec.body, /^openapi: 3\.1\.0$/m);
      const docs = await api.app.inject({ url: '/docs' });
      assert.equal(docs.statusCode, 200);
      assert.match(docs.body, /swagger/i);
    } finally {
      await api.close();
    }
  });
});
