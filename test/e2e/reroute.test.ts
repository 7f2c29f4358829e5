// Deferred mail takes a route added after it was queued, in a running `postern`: mail for a
// domain whose MX lookup fails waits in the queue; the administrator adds a route for the domain
// (in the config file, then a restart; or over the REST API, no restart) and runs
// `postern queue retry`: the message goes to the route's next hop, once, and no DSN comes back.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { readMaildir, waitFor } from '../helpers/wait.js';

const TOKEN = 'reroute-test-token-0123456789';

const spoolIds = async (d: RunningDaemon) => (await readdir(join(d.dataDir, 'spool', 'q')).catch(() => [] as string[])).filter((f) => /^[0-9A-Z]{18}$/.test(f));

describe('a route added while mail waits: the retry takes it', () => {
  let dns: RunningDnsServer;
  let hop: RunningSink;
  let d: RunningDaemon;
  const config = (routes: Record<string, string> = {}) => ({
    listen: { smtp: { host: '127.0.0.1', port: 0 }, api: { host: '127.0.0.1', port: 0 } },
    api: { tokens: [{ name: 'ops', token: TOKEN, scope: 'write' }] },
    dns: { servers: [dns.server], timeout: '1s', tries: 1 },
    // A long wait between attempts: only `postern queue retry` tries again within the test.
    outbound: { mx_port: hop.port, tls: 'none', retry: ['1h'] },
    routes,
  });
  const nexthop = () => `smtp://${hop.host}:${hop.port}`;

  /** Submits a message to `rcpt` and waits until it is deferred on its failing MX lookup. */
  async function deferred(rcpt: string): Promise<void> {
    const r = await d.cli(['sendmail', '-f', 'alice@example.test', rcpt], `Subject: to ${rcpt}\n\nbody\n`);
    assert.equal(r.code, 0, r.stderr);
    const domain = rcpt.split('@')[1]!.replace(/\./g, '\\.');
    const line = await waitFor(
      () => d.logs.find((l) => l.evt === 'delivery.deferred' && l.rcpt === rcpt),
      (l) => l !== undefined,
    );
    assert.match(String(line?.err), new RegExp(`DNS lookup of ${domain} failed`));
  }

  async function retried(rcpt: string): Promise<void> {
    const r = await d.cli(['queue', 'retry']);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      async () => hop.messages.some((m) => m.to.includes(rcpt)) && (await spoolIds(d)).length === 0,
      (ok) => ok,
      15_000,
    );
    await new Promise((res) => setTimeout(res, 500));
    assert.deepEqual(
      hop.messages.filter((m) => m.to.includes(rcpt)).map((m) => m.to),
      [[rcpt]],
      'delivered to the route, once',
    );
    assert.deepEqual(await spoolIds(d), []);
    assert.deepEqual(await readMaildir(d, 'alice'), [], 'no DSN');
  }

  before(async () => {
    // No MX answer for these domains: SERVFAIL, a temporary failure.
    dns = await startDnsServer({ records: {}, behaviour: (name) => (name === 'z.test' || name === 'w.test' ? 'servfail' : 'answer') });
    hop = await startSink({}, 0, '127.0.0.22');
    d = await startDaemon(config());
    const r = await d.cli(['user', 'add', 'alice@example.test', '--no-password']);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    await hop?.stop();
    await dns?.stop();
    if (d) await removeDir(d.dir);
  });

  it('routes: in the config file, then a restart and `postern queue retry`', async () => {
    await deferred('user@z.test');
    assert.equal(await d.stop(), 0);
    d = await startDaemon(config({ 'z.test': nexthop() }), { dir: d.dir });
    await retried('user@z.test');
  });

  it('a route PUT over the REST API, then `postern queue retry`, without a restart', async () => {
    await deferred('user2@w.test');
    const put = await fetch(`http://127.0.0.1:${d.ports.api}/v1/policies/relay/routes/w.test`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ nexthop: nexthop() }),
    });
    assert.equal(put.status, 201, await put.text());
    await retried('user2@w.test');
  });
});
