// /v1/dnsbl/zones: CRUD with its errors. What a zone does to a listed client is tested in
// plugins/dnsbl/dnsbl.test.ts (store zones) and over SMTP in policy-daemon.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';
import { DNSBL_ZONES_KEY } from '../../src/policy/dnsbl.js';

const base = '/v1/dnsbl/zones';

describe('/v1/dnsbl/zones', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  it('PUT creates a zone (201, ETag, Location), normalised; the default action is reject-connect', async () => {
    const r = await api.call({ method: 'PUT', url: `${base}/Zen.Example.`, token: WRITER, body: { answers: ['127.0.0.2-127.0.0.11', ' 127.0.1.0/24'] } });
    assert.equal(r.status, 201, r.body);
    assert.equal(r.headers.location, `${base}/zen.example`);
    const z = r.json();
    assert.deepEqual({ ...z, updated_at: undefined }, { zone: 'zen.example', answers: ['127.0.0.2-127.0.0.11', '127.0.1.0/24'], action: 'reject-connect', updated_at: undefined });
    assert.equal((await api.call({ url: `${base}/zen.example`, token: READER })).headers.etag, r.headers.etag);
    assert.ok(await api.store.hget(DNSBL_ZONES_KEY, 'zen.example'));
  });

  it('PUT replaces (200) with If-Match; 412 when stale or when If-None-Match: * and it exists', async () => {
    const etag = String((await api.call({ url: `${base}/zen.example` })).headers.etag);
    assertProblem(await api.call({ method: 'PUT', url: `${base}/zen.example`, headers: { 'if-match': '"stale"' }, body: { action: 'reject-rcpt' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/zen.example`, headers: { 'if-none-match': '*' }, body: { action: 'reject-rcpt' } }), 412, 'precondition-failed');
    const r = await api.call({ method: 'PUT', url: `${base}/zen.example`, headers: { 'if-match': etag }, body: { action: 'score', score: 2.5 } });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual({ ...r.json<Record<string, unknown>>(), updated_at: undefined }, { zone: 'zen.example', action: 'score', score: 2.5, updated_at: undefined });
    assert.equal((await api.call({ method: 'PUT', url: `${base}/rcpt.example`, body: { action: 'reject-rcpt' } })).status, 201);
    const list = (await api.call({ url: base, token: READER })).json<{ zones: { zone: string; action: string }[] }>().zones;
    assert.deepEqual(
      list.map((z) => [z.zone, z.action]),
      [
        ['rcpt.example', 'reject-rcpt'],
        ['zen.example', 'score'],
      ],
    );
  });

  it('400 for bad zones and bodies, naming the field', async () => {
    const bad: [string, unknown, RegExp][] = [
      ['zen.example', { answers: ['127.0.0.300'] }, /\/body\/answers\/0/],
      ['zen.example', { answers: ['::1'] }, /\/body\/answers\/0/],
      ['zen.example', { answers: ['127.0.0.9-127.0.0.2'] }, /\/body\/answers\/0/],
      ['zen.example', { answers: [] }, /\/body\/answers/],
      ['zen.example', { action: 'drop' }, /\/body\/action/],
      ['zen.example', { action: 'score' }, /\/body\/score: action score needs a score/],
      ['zen.example', { action: 'reject-rcpt', score: 1 }, /\/body\/score: a score applies only with action score/],
      ['zen.example', { action: 'score', score: 0 }, /\/body\/score/],
      ['zen.example', { zone: 'x' }, /zone/],
      ['localhost', {}, /\/path\/zone/],
      ['bad_zone!.example', {}, /\/path\/zone/],
    ];
    for (const [zone, body, why] of bad) assert.match(String(assertProblem(await api.call({ method: 'PUT', url: `${base}/${encodeURIComponent(zone)}`, body }), 400, 'bad-request').detail), why, JSON.stringify(body));
    assertProblem(await api.call({ url: `${base}/-bad-` }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/zen.example`, payload: 'x', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported-media-type');
  });

  it('401 without a token, 403 for a read token on PUT and DELETE', async () => {
    assertProblem(await api.call({ url: base, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/x.example`, token: READER, body: {} }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/zen.example`, token: READER }), 403, 'forbidden');
  });

  it('DELETE honours If-Match, then 404; the audit log has each change', async () => {
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/zen.example`, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    const etag = String((await api.call({ url: `${base}/zen.example` })).headers.etag);
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/zen.example`, headers: { 'if-match': etag } })).status, 204);
    assertProblem(await api.call({ url: `${base}/zen.example` }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/zen.example` }), 404, 'not-found');
    const entries = (await api.call({ url: '/v1/audit?resource=dnsbl/zones/zen.example' })).json<{ entries: { action: string; token: string; before: unknown; after: unknown }[] }>().entries;
    assert.deepEqual(
      entries.map((e) => [e.action, e.token]),
      [
        ['dnsbl.zone.delete', 'admin'],
        ['dnsbl.zone.replace', 'admin'],
        ['dnsbl.zone.add', 'writer'],
      ],
    );
    assert.equal(entries[0]!.after, null);
  });
});
