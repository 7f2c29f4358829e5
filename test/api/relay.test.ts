// /v1/policies/relay/networks, in-process; the effect on relaying is checked through the dry-run
// (the same plugin chain the daemon runs) and, over SMTP, in daemon.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

const base = '/v1/policies/relay/networks';

describe('/v1/policies/relay/networks', () => {
  let api: TestApi;
  before(async () => (api = await startApi()));
  after(() => api.close());

  const relayFrom = async (client: string) =>
    (
      await api.call({
        method: 'POST',
        url: '/v1/test',
        token: READER,
        body: { envelope: { client, helo: 'c.example', from: 'a@sender.example', to: ['x@elsewhere.example'] }, message: 'Subject: hi\r\n\r\nhello\r\n' },
      })
    ).json<{ recipients: { outcome: string; reply: string }[] }>().recipients[0]!;

  it('POST adds a network (201, normalised, ETag, Location); it lets that client relay at once', async () => {
    assert.equal((await relayFrom('192.0.2.77')).reply, '554 5.7.1 Relay access denied');
    const r = await api.call({ method: 'POST', url: base, body: { cidr: '192.0.2.9/24' }, token: WRITER });
    assert.equal(r.status, 201);
    const n = r.json<{ id: string; cidr: string }>();
    assert.equal(n.cidr, '192.0.2.0/24');
    assert.equal(r.headers.location, `${base}/${n.id}`);
    assert.ok(r.headers.etag);
    assert.equal(await api.store.hget('policy:relay:networks', n.id), '192.0.2.0/24');
    assert.equal((await relayFrom('192.0.2.77')).outcome, 'accepted');

    const list = await api.call({ url: base, token: READER });
    assert.deepEqual(list.json(), { networks: [n] });
    const one = await api.call({ url: `${base}/${n.id}`, token: READER });
    assert.equal(one.headers.etag, r.headers.etag);
  });

  it('IPv6 ranges and single addresses are accepted', async () => {
    const v6 = await api.call({ method: 'POST', url: base, body: { cidr: '2001:db8::1/32' } });
    assert.equal(v6.json().cidr, '2001:db8::/32');
    const one = await api.call({ method: 'POST', url: base, body: { cidr: '198.51.100.7' } });
    assert.equal(one.json().cidr, '198.51.100.7/32');
  });

  it('409 when the network is there already', async () => {
    const p = assertProblem(await api.call({ method: 'POST', url: base, body: { cidr: '192.0.2.0/24' } }), 409, 'conflict');
    assert.match(String(p.detail), /192\.0\.2\.0\/24/);
  });

  it('400 for a bad CIDR, a missing or extra field, a bad id; 415 for a form body', async () => {
    for (const body of [{ cidr: '10.0.0.0/33' }, { cidr: 'ten' }, {}, { cidr: '10.0.0.0/8', note: 'x' }]) {
      assertProblem(await api.call({ method: 'POST', url: base, body }), 400, 'bad-request');
    }
    assertProblem(await api.call({ url: `${base}/XYZ` }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: base, payload: 'cidr=10.0.0.0/8', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported-media-type');
  });

  it('401 without a token, 403 for a read token on POST and DELETE', async () => {
    assertProblem(await api.call({ url: base, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'POST', url: base, body: { cidr: '10.0.0.0/8' }, token: READER }), 403, 'forbidden');
    const [n] = (await api.call({ url: base })).json<{ networks: { id: string }[] }>().networks;
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${n!.id}`, token: READER }), 403, 'forbidden');
  });

  it('DELETE honours If-Match (412 when stale), 404 when gone; the client may no longer relay', async () => {
    const r = await api.call({ url: base });
    const n = r.json<{ networks: { id: string; cidr: string }[] }>().networks.find((x) => x.cidr === '192.0.2.0/24')!;
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${n.id}`, headers: { 'if-match': '"old"' } }), 412, 'precondition-failed');
    const etag = String((await api.call({ url: `${base}/${n.id}` })).headers.etag);
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/${n.id}`, headers: { 'if-match': etag } })).status, 204);
    assertProblem(await api.call({ url: `${base}/${n.id}` }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/${n.id}` }), 404, 'not-found');
    assert.equal((await relayFrom('192.0.2.77')).reply, '554 5.7.1 Relay access denied');
  });
});
