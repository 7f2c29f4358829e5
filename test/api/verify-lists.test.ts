// /v1/verify/lists/{domain}[/{address}], in-process: the store hash a `verify: list` route reads
// (src/proxy/verify.ts), its effect on RCPT checked by the verifier itself; bad input refused.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';
import { RecipientVerifier } from '../../src/proxy/verify.js';
import { silentLogger } from '../../src/log/logger.js';

const base = '/v1/verify/lists';
const route = { nexthop: 'smtp://127.0.0.1:9', mode: 'queue' as const, verify: 'list' as const };

describe('/v1/verify/lists', () => {
  let api: TestApi;
  let verifier: RecipientVerifier;
  before(async () => {
    api = await startApi();
    verifier = new RecipientVerifier({ store: api.store, log: silentLogger(), hostname: 'mx.example.test' });
  });
  after(async () => {
    verifier.close();
    await api.close();
  });

  const rcpt = async (a: string) => (await verifier.verify(route, a, a.split('@')[1]!))!.reply?.toString() ?? 'accepted';

  it('PUT lists an address (201, then 200), GET shows it, the next RCPT is accepted; DELETE unlists it', async () => {
    assert.match(await rcpt('orders@shop.example'), /^550 5\.1\.1 /);
    const r = await api.call({ method: 'PUT', url: `${base}/shop.example/Orders@Shop.Example`, token: WRITER });
    assert.equal(r.status, 201);
    assert.deepEqual(r.json(), { address: 'orders@shop.example' });
    assert.equal((await api.call({ method: 'PUT', url: `${base}/shop.example/orders@shop.example`, token: WRITER })).status, 200);
    assert.equal(await api.store.hget('verify:list:shop.example', 'orders@shop.example'), '1');
    assert.equal(await rcpt('orders@shop.example'), 'accepted');
    const list = await api.call({ url: `${base}/shop.example`, token: READER });
    assert.deepEqual(list.json(), { domain: 'shop.example', addresses: ['orders@shop.example'] });
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/shop.example/orders@shop.example`, token: WRITER })).status, 204);
    assert.match(await rcpt('orders@shop.example'), /^550 5\.1\.1 /);
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/shop.example/orders@shop.example`, token: WRITER }), 404, 'not-found');
  });

  it('refuses an address outside the domain, an address trick, a bad domain, and a read-only token', async () => {
    assertProblem(await api.call({ method: 'PUT', url: `${base}/shop.example/x@other.example`, token: WRITER }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/shop.example/${encodeURIComponent('x%evil.example@shop.example')}`, token: WRITER }), 400, 'bad-request');
    assertProblem(await api.call({ url: `${base}/not_a_domain`, token: READER }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/shop.example/a@shop.example`, token: READER }), 403, 'forbidden');
  });
});
