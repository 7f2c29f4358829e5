// /v1/policies/relay/domains, /senders, /recipients: CRUD, and their effect on the next
// transaction through the real relay-acl plugin (seen with the dry-run).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';

describe('relay domains and access lists', () => {
  let api: TestApi;
  before(async () => {
    api = await startApi();
    await api.ctx.directory!.addUser('dave@example.test', 'pw');
  });
  after(() => api.close());

  const outcome = async (from: string, to: string, client = '203.0.113.9') =>
    (
      await api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client, helo: 'c.example', from, to: [to] }, message: 'Subject: x\r\n\r\nhi\r\n' } })
    ).json<{ recipients: { outcome: string; reply: string }[] }>().recipients[0]!;

  it('relay domains: POST lets anyone send to that domain (and only to it); DELETE takes it back', async () => {
    assert.equal((await outcome('a@b.example', 'x@backup.example')).reply, '554 5.7.1 Relay access denied');
    const r = await api.call({ method: 'POST', url: '/v1/policies/relay/domains', body: { domain: 'Backup.Example' }, token: WRITER });
    assert.equal(r.status, 201);
    assert.deepEqual(r.json(), { domain: 'backup.example' });
    assert.equal((await outcome('a@b.example', 'x@backup.example')).outcome, 'accepted');
    assert.equal((await outcome('a@b.example', 'x@other.example')).outcome, 'rejected');
    assert.deepEqual((await api.call({ url: '/v1/policies/relay/domains', token: READER })).json(), { domains: [{ domain: 'backup.example' }] });
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/domains', body: { domain: 'backup.example' } }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/domains', body: { domain: 'example.test' } }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/domains', body: { domain: 'not a domain' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/domains', body: { domain: 'x.example' }, token: READER }), 403, 'forbidden');
    assertProblem(await api.call({ url: '/v1/policies/relay/domains', token: null }), 401, 'unauthorized');
    const one = await api.call({ url: '/v1/policies/relay/domains/backup.example' });
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/policies/relay/domains/backup.example', headers: { 'if-match': '"x"' } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: '/v1/policies/relay/domains/backup.example', headers: { 'if-match': String(one.headers.etag) } })).status, 204);
    assertProblem(await api.call({ url: '/v1/policies/relay/domains/backup.example' }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/policies/relay/domains/backup.example' }), 404, 'not-found');
    assert.equal((await outcome('a@b.example', 'x@backup.example')).reply, '554 5.7.1 Relay access denied');
  });

  it('sender access: deny by domain (and subdomains), address or client CIDR refuses at MAIL; an allow does not override a deny', async () => {
    assert.equal((await outcome('a@spam.example', 'dave@example.test')).outcome, 'accepted');
    const d = await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: 'spam.example', action: 'deny' } });
    assert.equal(d.status, 201);
    assert.deepEqual({ ...d.json<Record<string, unknown>>(), id: undefined }, { id: undefined, match: 'domain', value: 'spam.example', action: 'deny' });
    assert.equal((await outcome('a@spam.example', 'dave@example.test')).reply, '550 5.7.1 Sender address rejected: access denied');
    assert.equal((await outcome('a@mx.spam.example', 'dave@example.test')).reply, '550 5.7.1 Sender address rejected: access denied');
    assert.equal((await outcome('a@notspam.example', 'dave@example.test')).outcome, 'accepted');
    await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: 'a@spam.example', action: 'allow' } });
    assert.equal((await outcome('a@spam.example', 'dave@example.test')).outcome, 'rejected');
    const cidr = await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: '198.51.100.0/24', action: 'deny' } });
    assert.equal(cidr.json().match, 'cidr');
    assert.equal((await outcome('ok@fine.example', 'dave@example.test', '198.51.100.20')).outcome, 'rejected');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: 'spam.example', action: 'allow' } }), 409, 'conflict');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: 'x', action: 'maybe' } }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'POST', url: '/v1/policies/relay/senders', body: { value: '@@', action: 'deny' } }), 400, 'bad-request');
    const list = (await api.call({ url: '/v1/policies/relay/senders', token: READER })).json<{ entries: { id: string; value: string }[] }>().entries;
    assert.deepEqual(list.map((e) => e.value), ['a@spam.example', '198.51.100.0/24', 'spam.example']);
    for (const e of list) assert.equal((await api.call({ method: 'DELETE', url: `/v1/policies/relay/senders/${e.id}` })).status, 204);
    assert.equal((await outcome('a@spam.example', 'dave@example.test')).outcome, 'accepted');
    assertProblem(await api.call({ url: `/v1/policies/relay/senders/${list[0]!.id}` }), 404, 'not-found');
  });

  it('recipient access: deny refuses that recipient; allow accepts it (relaying included)', async () => {
    const deny = await api.call({ method: 'POST', url: '/v1/policies/relay/recipients', body: { value: 'dave@example.test', action: 'deny' } });
    assert.equal((await outcome('a@b.example', 'dave@example.test')).reply, '550 5.7.1 Recipient address rejected: access denied');
    const allow = await api.call({ method: 'POST', url: '/v1/policies/relay/recipients', body: { value: 'partner.example', action: 'allow' } });
    assert.equal((await outcome('a@b.example', 'x@partner.example')).outcome, 'accepted');
    assertProblem(await api.call({ method: 'DELETE', url: `/v1/policies/relay/recipients/${deny.json().id as string}`, headers: { 'if-match': String(allow.headers.etag) } }), 412, 'precondition-failed');
    assert.equal((await api.call({ method: 'DELETE', url: `/v1/policies/relay/recipients/${deny.json().id as string}`, headers: { 'if-match': String(deny.headers.etag) } })).status, 204);
    assert.equal((await outcome('a@b.example', 'dave@example.test')).outcome, 'accepted');
    assertProblem(await api.call({ method: 'DELETE', url: '/v1/policies/relay/recipients/zzz', token: WRITER }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'DELETE', url: `/v1/policies/relay/recipients/${allow.json().id as string}`, token: READER }), 403, 'forbidden');
  });
});
