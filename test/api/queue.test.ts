// /v1/queue against a real queue manager on a temp spool, with no outbound transport: remote
// recipients are held in the spool, which gives the API something to list, retry, bounce, delete.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildApi, type BuiltApi } from '../../src/api/app.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createDirectory } from '../../src/directory/index.js';
import { createMessageQueue, type ManagedQueue } from '../../src/queue/manager.js';
import { silentLogger } from '../../src/log/logger.js';
import { envelope, message, tempDir, testConfig } from '../unit/queue/helpers.js';
import { waitFor } from '../helpers/wait.js';
import { ADMIN, assertProblem, call, READER } from './harness.js';

describe('/v1/queue', () => {
  let built: BuiltApi;
  let queue: ManagedQueue;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const store = createMemoryStore();
  const api = (c: Parameters<typeof call>[1]) => call(built.app, c);
  const ids: string[] = [];

  before(async () => {
    tmp = await tempDir('postern-api-queue-');
    const config = testConfig(tmp.dir, { api: { tokens: [{ name: 'admin', token: ADMIN, scope: 'admin' }, { name: 'reader', token: READER, scope: 'read' }] } });
    const log = silentLogger();
    const directory = createDirectory({ store, localDomains: config.domains.local, log });
    queue = createMessageQueue({ config, log, directory, store });
    await queue.start();
    for (const [from, to] of [
      ['a@sender.example', 'x@remote.example'],
      ['b@other.example', 'y@far.example'],
      ['a@sender.example', 'z@far.example'],
    ] as const) {
      const id = queue.newId();
      ids.push(id);
      await queue.accept(id, envelope(from, [to]), message('hello'));
    }
    // Without an outbound transport the remote recipients end up held.
    await waitFor(() => queue.entries(), (es) => es.length === 3 && es.every((e) => e.targets?.every((t) => t.status === 'held')));
    built = await buildApi({ config, store, directory, queue, log });
  });
  after(async () => {
    await built.app.close();
    await queue.stop();
    await store.close();
    await tmp.cleanup();
  });

  it('lists the queued messages with their recipients, filtered by state, domain, sender and age', async () => {
    const all = (await api({ url: '/v1/queue', token: READER })).json<{ messages: { id: string; sender: string; recipients: { address: string; status: string; destination?: string }[] }[] }>().messages;
    assert.deepEqual(all.map((m) => m.id).sort(), [...ids].sort());
    assert.deepEqual(all.find((m) => m.id === ids[0])!.recipients.map((r) => [r.address, r.status, r.destination]), [['x@remote.example', 'held', 'remote:remote.example']]);
    const far = (await api({ url: '/v1/queue?domain=far.example' })).json<{ messages: { id: string }[] }>().messages;
    assert.deepEqual(far.map((m) => m.id).sort(), [ids[1], ids[2]].sort());
    const bySender = (await api({ url: '/v1/queue?sender=A@Sender.Example&state=held' })).json<{ messages: { id: string }[] }>().messages;
    assert.deepEqual(bySender.map((m) => m.id).sort(), [ids[0], ids[2]].sort());
    assert.deepEqual((await api({ url: '/v1/queue?state=deferred' })).json(), { messages: [] });
    assert.deepEqual((await api({ url: '/v1/queue?min_age=86400' })).json(), { messages: [] });
  });

  it('400 for a bad filter or id, 401, 403 for a read token on changes, 404 for an unknown id', async () => {
    assertProblem(await api({ url: '/v1/queue?state=stuck' }), 400, 'bad-request');
    assertProblem(await api({ url: '/v1/queue?min_age=-1' }), 400, 'bad-request');
    assertProblem(await api({ url: '/v1/queue?color=red' }), 400, 'bad-request');
    assertProblem(await api({ url: '/v1/queue/not-an-id' }), 400, 'bad-request');
    assertProblem(await api({ url: '/v1/queue', token: null }), 401, 'unauthorized');
    assertProblem(await api({ method: 'POST', url: `/v1/queue/${ids[0]}/retry`, token: READER }), 403, 'forbidden');
    assertProblem(await api({ method: 'DELETE', url: `/v1/queue/${ids[0]}`, token: READER }), 403, 'forbidden');
    const unknown = queue.newId();
    assertProblem(await api({ url: `/v1/queue/${unknown}` }), 404, 'not-found');
    assertProblem(await api({ method: 'POST', url: `/v1/queue/${unknown}/retry` }), 404, 'not-found');
    assertProblem(await api({ method: 'POST', url: `/v1/queue/${unknown}/bounce` }), 404, 'not-found');
    assertProblem(await api({ method: 'DELETE', url: `/v1/queue/${unknown}` }), 404, 'not-found');
  });

  it('GET one, retry it, then DELETE with If-Match (412 when stale)', async () => {
    const one = await api({ url: `/v1/queue/${ids[0]}` });
    assert.equal(one.json().sender, 'a@sender.example');
    const r = await api({ method: 'POST', url: `/v1/queue/${ids[0]}/retry` });
    assert.deepEqual(r.json(), { id: ids[0], retried: true });
    assertProblem(await api({ method: 'DELETE', url: `/v1/queue/${ids[0]}`, headers: { 'if-match': '"stale"' } }), 412, 'precondition-failed');
    const cur = await api({ url: `/v1/queue/${ids[0]}` });
    assert.equal((await api({ method: 'DELETE', url: `/v1/queue/${ids[0]}`, headers: { 'if-match': String(cur.headers.etag) } })).status, 204);
    assert.ok(!queue.entries().some((e) => e.id === ids[0]));
  });

  it('bounce fails the open recipients (and queues the DSN to the sender)', async () => {
    const r = await api({ method: 'POST', url: `/v1/queue/${ids[1]}/bounce` });
    assert.deepEqual(r.json(), { id: ids[1], bounced: true });
    // The bounced message is finished; a DSN to its sender is queued in its place.
    await waitFor(() => queue.entries(), (es) => !es.some((e) => e.id === ids[1]) && es.some((e) => e.envelope.mailFrom === '' && e.envelope.recipients.some((x) => x.address === 'b@other.example')));
    const audit = (await api({ url: '/v1/audit?action=queue.bounce' })).json<{ entries: { token: string; resource: string }[] }>().entries;
    assert.deepEqual(audit.map((e) => [e.token, e.resource]), [['admin', `queue/${ids[1]}`]]);
  });
});
