// /v1/policies/relay/rate-limits: CRUD with its errors, and the rate-limit plugin reading the
// policies from the store on the next transaction (here through the plugin test harness on the
// same store; over SMTP in policy-daemon.test.ts).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import rateLimit from '../../plugins/rate-limit/index.js';
import { RATE_LIMITS_KEY } from '../../src/policy/rate-limits.js';

const base = '/v1/policies/relay/rate-limits';

describe('/v1/policies/relay/rate-limits', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  let id = '';

  it('POST adds a policy (201, ETag, Location, the window in words and in ms)', async () => {
    const r = await api.call({ method: 'POST', url: base, token: WRITER, body: { key: 'client_ip', max: 2, window: '1h' } });
    assert.equal(r.status, 201, r.body);
    const p = r.json<{ id: string; key: string; max: number; window: string; window_ms: number; reply: number }>();
    id = p.id;
    assert.deepEqual({ ...p, updated_at: undefined }, { id, key: 'client_ip', max: 2, window: '1h', window_ms: 3_600_000, reply: 451, updated_at: undefined });
    assert.equal(r.headers.location, `${base}/${id}`);
    assert.equal((await api.call({ url: `${base}/${id}`, token: READER })).headers.etag, r.headers.etag);
    assert.deepEqual((await api.call({ url: base, token: READER })).json<{ policies: { id: string }[] }>().policies.map((x) => x.id), [id]);
  });

  it('the rate-limit plugin applies it to the next transaction: 451 4.7.0 over the limit', async () => {
    // No configured limits: the plugin runs on the store's policies alone.
    const h = testPlugin(rateLimit, {}, { store: api.store });
    const verdicts: string[] = [];
    for (let i = 0; i < 3; i++) {
      h.newConnection({ remoteAddress: '192.0.2.10' });
      const v = (await h.run('mail', { tx: { mailFrom: 'a@b.example' } })).verdict;
      verdicts.push(v.kind === 'next' ? 'next' : `${v.kind} ${'code' in v ? v.code : ''} ${'enhanced' in v ? v.enhanced : ''}`);
    }
    assert.deepEqual(verdicts, ['next', 'next', 'tempfail 451 4.7.0']);
    await h.close();
  });

  it('409 for a second policy with the same key and window', async () => {
    const p = assertProblem(await api.call({ method: 'POST', url: base, body: { key: 'client_ip', max: 5, window: 3_600_000 } }), 409, 'conflict');
    assert.match(String(p.detail), new RegExp(id));
  });

  it('PUT changes max and reply (If-Match honoured); 422 when key or window would change; 404 for an unknown id', async () => {
    const etag = String((await api.call({ url: `${base}/${id}` })).headers.etag);
    assertProblem(await api.call({ method: 'PUT', url: `${base}/${id}`, headers: { 'if-match': '"stale"' }, body: { key: 'client_ip', max: 5, window: '1h' } }), 412, 'precondition-failed');
    const r = await api.call({ method: 'PUT', url: `${base}/${id}`, headers: { 'if-match': etag }, body: { key: 'client_ip', max: 5, window: '60m', reply: 421 } });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json().max, 5);
    assert.equal(r.json().reply, 421);
    assert.notEqual(r.headers.etag, etag);
    const p = assertProblem(await api.call({ method: 'PUT', url: `${base}/${id}`, body: { key: 'recipient', max: 5, window: '1h' } }), 422, 'unprocessable');
    assert.match(String(p.detail), /cannot change/);
    assertProblem(await api.call({ method: 'PUT', url: `${base}/${id}`, body: { key: 'client_ip', max: 5, window: '2h' } }), 422, 'unprocessable');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/000000000000`, body: { key: 'client_ip', max: 5, window: '1h' } }), 404, 'not-found');
  });

  it('400 for bad bodies and ids, naming the field', async () => {
    const bad: [unknown, RegExp][] = [
      [{ key: 'helo', max: 1, window: '1h' }, /\/body\/key/],
      [{ key: 'client_ip', max: 0, window: '1h' }, /\/body\/max/],
      [{ key: 'client_ip', max: 1.5, window: '1h' }, /\/body\/max/],
      [{ key: 'client_ip', max: 1, window: 'often' }, /\/body\/window: expected a duration/],
      [{ key: 'client_ip', max: 1, window: '500ms' }, /\/body\/window: the window must be between 1s and 30d/],
      [{ key: 'client_ip', max: 1, window: '60d' }, /\/body\/window/],
      [{ key: 'client_ip', max: 1, window: '1h', reply: 450 }, /\/body\/reply/],
      [{ key: 'client_ip', max: 1, window: '1h', extra: true }, /extra/],
      [{ key: 'client_ip', window: '1h' }, /\/body\/max/],
    ];
    for (const [body, why] of bad) assert.match(String(assertProblem(await api.call({ method: 'POST', url: base, body }), 400, 'bad-request').detail), why, JSON.stringify(body));
    assertProblem(await api.call({ url: `${base}/nope` }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/${id}`, body: { max: 3 } }), 400, 'bad-request');
  });

  it('401 without a token, 403 for a read token on POST, PUT and DELETE', async () => {
    assertProblem(await api.call({ url: base, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'POST', url: base, token: READER, body: { key: 'recipient', max: 1, window: '1h' } }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/${id}`, token: READER, body: { key: 'client_ip', max: 1, window: '1h' } }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${id}`, token: READER }), 403, 'forbidden');
  });

  it('DELETE honours If-Match, then 404; the audit log has add, replace and delete', async () => {
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${id}`, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/${id}` })).status, 204);
    assertProblem(await api.call({ url: `${base}/${id}` }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${id}` }), 404, 'not-found');
    assert.deepEqual(await api.store.hgetall(RATE_LIMITS_KEY), {});
    const entries = (await api.call({ url: `/v1/audit?resource=policies/relay/rate-limits/${id}` })).json<{ entries: { action: string }[] }>().entries;
    assert.deepEqual(
      entries.map((e) => e.action),
      ['ratelimit.delete', 'ratelimit.replace', 'ratelimit.add'],
    );
  });
});
