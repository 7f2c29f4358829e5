// /v1/policies/relay/routes: CRUD with its errors, the password never shown, and the effect on
// the next transaction through the real relay-acl plugin and router view (seen with the dry-run:
// a routed domain is accepted from anyone and goes to its next hop). Mail really reaching a next
// hop added over the API is in policy-daemon.test.ts.
import assert from 'node:assert/strict';
import { routeForwardMode } from '../../src/transport/forward-client.js';
import { after, before, describe, it } from 'node:test';
import { assertProblem, READER, startApi, WRITER, type TestApi } from './harness.js';
import { LiveRoutes, RELAY_ROUTES_KEY, transportNexthop } from '../../src/policy/routes.js';
import { createRouter } from '../../src/delivery/router.js';

const base = '/v1/policies/relay/routes';

describe('/v1/policies/relay/routes', () => {
  let api: TestApi;
  before(async () => (api = await startApi({ routes: { 'static.example': 'smtp://192.0.2.1:25' } })));
  after(() => api.close());

  const dry = async (to: string) =>
    (
      await api.call({ method: 'POST', url: '/v1/test', token: READER, body: { envelope: { client: '203.0.113.9', helo: 'c.example', from: 'a@b.example', to: [to] }, message: 'Subject: x\r\n\r\nhi\r\n' } })
    ).json<{ recipients: { outcome: string; reply: string; delivery?: { kind: string; nexthop?: string } }[] }>().recipients[0]!;

  it('PUT creates a route (201, ETag, Location); the domain is accepted from anyone and routed there at once', async () => {
    assert.equal((await dry('x@corp.example')).reply, '554 5.7.1 Relay access denied');
    const r = await api.call({ method: 'PUT', url: `${base}/Corp.Example`, token: WRITER, body: { nexthop: 'smtp://10.0.0.5:2525', tls: 'required', auth: { username: 'relay', password: 's3cret:/@' } } });
    assert.equal(r.status, 201, r.body);
    assert.equal(r.headers.location, `${base}/corp.example`);
    assert.ok(r.headers.etag);
    const route = r.json();
    assert.equal(route.domain, 'corp.example');
    assert.deepEqual(route.auth, { username: 'relay' });
    assert.equal(route.mode, 'queue');
    assert.equal(route.verify, 'none');
    assert.ok(!r.body.includes('s3cret'), 'the password is never returned');
    const d = await dry('x@corp.example');
    assert.equal(d.outcome, 'accepted');
    assert.deepEqual(d.delivery, { kind: 'route', nexthop: 'smtp://***@10.0.0.5:2525?tls=required' });
  });

  it('the transport gets the credentials and the TLS policy in its URL; the router uses the store route', async () => {
    const stored = JSON.parse((await api.store.hget(RELAY_ROUTES_KEY, 'corp.example'))!) as Parameters<typeof transportNexthop>[0];
    const url = new URL(transportNexthop(stored));
    assert.equal(decodeURIComponent(url.username), 'relay');
    assert.equal(decodeURIComponent(url.password), 's3cret:/@');
    assert.equal(url.searchParams.get('tls'), 'required');
    const router = createRouter({ config: api.ctx.config, directory: api.ctx.directory!, routes: new LiveRoutes(api.ctx.config.routes, api.store) });
    const r = await router.route('someone@corp.example');
    assert.equal(r.status, 'ok');
    const t = r.status === 'ok' ? r.targets[0]! : null;
    assert.ok(t?.kind === 'remote' && t.via.type === 'route' && t.via.match === 'corp.example' && t.via.nexthop === transportNexthop(stored));
  });

  it('forward_client is stored, shown and handed to the transport; absent, the config default applies', async () => {
    const put = await api.call({ method: 'PUT', url: `${base}/fwd.example`, body: { nexthop: 'smtp://10.0.0.9:25', forward_client: 'xforward' } });
    assert.equal(put.status, 201);
    assert.equal(put.json<{ forward_client?: string }>().forward_client, 'xforward');
    const mode = async (d: string) => {
      const m = (await new LiveRoutes(api.ctx.config.routes, api.store).table()).find(d);
      return m && typeof m.route === 'object' ? routeForwardMode(m.route) : null;
    };
    assert.equal(await mode('fwd.example'), 'xforward');
    await api.call({ method: 'PUT', url: `${base}/plain.example`, body: { nexthop: 'smtp://10.0.0.9:25' } });
    const plain = await api.call({ url: `${base}/plain.example` });
    assert.equal(plain.json<{ forward_client?: string }>().forward_client, undefined);
    assert.equal(await mode('plain.example'), 'none');
    for (const d of ['fwd.example', 'plain.example']) assert.equal((await api.call({ method: 'DELETE', url: `${base}/${d}` })).status, 204);
  });

  it('wildcards: ".sub.example" routes every subdomain, not the domain itself; lmtp and lmtp+unix next hops', async () => {
    assert.equal((await api.call({ method: 'PUT', url: `${base}/.sub.example`, body: { nexthop: 'lmtp://127.0.0.1:2424' } })).status, 201);
    assert.equal((await api.call({ method: 'PUT', url: `${base}/sock.example`, body: { nexthop: 'lmtp+unix:/run/lmtp.sock', mode: 'proxy', verify: 'callout' } })).status, 201);
    assert.deepEqual((await dry('x@a.sub.example')).delivery, { kind: 'route', nexthop: 'lmtp://127.0.0.1:2424' });
    assert.equal((await dry('x@sub.example')).reply, '554 5.7.1 Relay access denied');
    const list = (await api.call({ url: base, token: READER })).json<{ routes: { domain: string }[] }>().routes;
    assert.deepEqual(
      list.map((x) => x.domain),
      ['.sub.example', 'corp.example', 'sock.example'],
    );
    assert.equal((await api.call({ url: `${base}/sock.example`, token: READER })).json().mode, 'proxy');
  });

  it('a store route replaces the config route of the same key while it exists', async () => {
    assert.deepEqual((await dry('x@static.example')).delivery, { kind: 'route', nexthop: 'smtp://192.0.2.1:25' });
    await api.call({ method: 'PUT', url: `${base}/static.example`, body: { nexthop: 'smtps://192.0.2.2' } });
    assert.deepEqual((await dry('x@static.example')).delivery, { kind: 'route', nexthop: 'smtps://192.0.2.2' });
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/static.example` })).status, 204);
    assert.deepEqual((await dry('x@static.example')).delivery, { kind: 'route', nexthop: 'smtp://192.0.2.1:25' });
  });

  it('PUT replaces (200) and honours If-Match / If-None-Match (412); changing only the password changes the ETag', async () => {
    const cur = await api.call({ url: `${base}/corp.example` });
    const etag = String(cur.headers.etag);
    assertProblem(await api.call({ method: 'PUT', url: `${base}/corp.example`, headers: { 'if-match': '"stale"' }, body: { nexthop: 'smtp://10.0.0.6' } }), 412, 'precondition-failed');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/corp.example`, headers: { 'if-none-match': '*' }, body: { nexthop: 'smtp://10.0.0.6' } }), 412, 'precondition-failed');
    const r = await api.call({ method: 'PUT', url: `${base}/corp.example`, headers: { 'if-match': etag }, body: { nexthop: 'smtp://10.0.0.5:2525', tls: 'required', auth: { username: 'relay', password: 'other' } } });
    assert.equal(r.status, 200);
    assert.notEqual(r.headers.etag, etag);
    assertProblem(await api.call({ method: 'PUT', url: `${base}/new.example`, headers: { 'if-match': '*' }, body: { nexthop: 'smtp://10.0.0.6' } }), 412, 'precondition-failed');
  });

  it('400 for bad keys and bodies, each naming the field', async () => {
    const bad: [string, unknown, RegExp][] = [
      ['ok.example', { nexthop: 'http://10.0.0.5' }, /\/body\/nexthop/],
      ['ok.example', { nexthop: 'smtp://user:pw@10.0.0.5' }, /credentials go in `auth`/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5?tls=none' }, /TLS policy goes in `tls`/],
      ['ok.example', { nexthop: 'lmtp+unix:relative/sock' }, /absolute socket path/],
      ['ok.example', { nexthop: 'lmtp+unix:/run/s', tls: 'required' }, /\/body\/tls/],
      ['ok.example', { nexthop: 'lmtp://10.0.0.5', auth: { username: 'u', password: 'p' } }, /\/body\/auth/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', tls: 'sometimes' }, /\/body\/tls/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', auth: { username: 'u' } }, /\/body\/auth\/password/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', auth: { username: 'u', password: 'p' } }, /\/body\/tls: credentials are sent only over TLS/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', tls: 'opportunistic', auth: { username: 'u', password: 'p' } }, /\/body\/tls/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', mode: 'fast' }, /\/body\/mode/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', forward_client: 'always' }, /\/body\/forward_client/],
      ['ok.example', { nexthop: 'smtp://10.0.0.5', note: 'x' }, /note/],
      ['ok.example', {}, /\/body\/nexthop/],
      ['not_a domain!', { nexthop: 'smtp://10.0.0.5' }, /\/path\/domain/],
      ['..example', { nexthop: 'smtp://10.0.0.5' }, /\/path\/domain/],
      // A whole top-level domain would be relayed for anyone.
      ['com', { nexthop: 'smtp://10.0.0.5' }, /\/path\/domain/],
      ['.com', { nexthop: 'smtp://10.0.0.5' }, /\/path\/domain/],
    ];
    for (const [key, body, why] of bad) {
      const p = assertProblem(await api.call({ method: 'PUT', url: `${base}/${encodeURIComponent(key)}`, body }), 400, 'bad-request');
      assert.match(String(p.detail), why, JSON.stringify(body));
    }
    assertProblem(await api.call({ url: `${base}/${encodeURIComponent('bad domain')}` }), 400, 'bad-request');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/ok.example`, payload: 'nexthop=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported-media-type');
  });

  it('409 for a local domain (its mail is delivered here)', async () => {
    const p = assertProblem(await api.call({ method: 'PUT', url: `${base}/example.test`, body: { nexthop: 'smtp://10.0.0.5' } }), 409, 'conflict');
    assert.match(String(p.detail), /local domain/);
  });

  it('401 without a token, 403 for a read token on PUT and DELETE', async () => {
    assertProblem(await api.call({ url: base, token: null }), 401, 'unauthorized');
    assertProblem(await api.call({ url: `${base}/corp.example`, token: 'nope-not-a-token' }), 401, 'unauthorized');
    assertProblem(await api.call({ method: 'PUT', url: `${base}/x.example`, token: READER, body: { nexthop: 'smtp://10.0.0.5' } }), 403, 'forbidden');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/corp.example`, token: READER }), 403, 'forbidden');
  });

  it('DELETE honours If-Match, then 404; the domain is refused again; the audit log has each change without the password', async () => {
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/corp.example`, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    const etag = String((await api.call({ url: `${base}/corp.example` })).headers.etag);
    assert.equal((await api.call({ method: 'DELETE', url: `${base}/corp.example`, headers: { 'if-match': etag } })).status, 204);
    assertProblem(await api.call({ url: `${base}/corp.example` }), 404, 'not-found');
    assertProblem(await api.call({ method: 'DELETE', url: `${base}/corp.example` }), 404, 'not-found');
    assert.equal((await dry('x@corp.example')).reply, '554 5.7.1 Relay access denied');
    const audit = await api.call({ url: '/v1/audit?resource=policies/relay/routes/corp.example' });
    const entries = audit.json<{ entries: { action: string; token: string }[] }>().entries;
    assert.deepEqual(
      entries.map((e) => [e.action, e.token]),
      [
        ['relay.route.delete', 'admin'],
        ['relay.route.replace', 'admin'],
        ['relay.route.add', 'writer'],
      ],
    );
    assert.ok(!audit.body.includes('s3cret') && !audit.body.includes('"other"'), 'no password in the audit log');
  });
});
