// Connection reuse through a running daemon: messages relayed one after another to the same MX
// share one SMTP connection (the sink counts connections), and with `outbound.reuse.max_messages: 1`
// each message has its own. Stopping the daemon closes the cached connection.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { waitFor as poll } from '../helpers/wait.js';

async function waitFor(ok: () => boolean): Promise<void> {
  assert.ok(await poll(ok, (v) => v, 15_000), 'condition not met in time');
}

describe('outbound connection reuse (daemon)', () => {
  let dns: RunningDnsServer;
  let sink: RunningSink;
  const daemons: RunningDaemon[] = [];

  before(async () => {
    dns = await startDnsServer({ records: {} });
    sink = await startSink({}, 0, '127.0.0.81');
    dns.setRecords({ 'reuse.test': { MX: [{ exchange: 'mx.reuse.test', priority: 10 }] }, 'mx.reuse.test': { A: ['127.0.0.81'] } });
  });
  after(async () => {
    for (const d of daemons) {
      await d.stop();
      await removeDir(d.dir);
    }
    await sink?.stop();
    await dns?.stop();
  });

  async function relayThree(reuse: Record<string, unknown>): Promise<{ connections: number; d: RunningDaemon }> {
    const d = await startDaemon({ dns: { servers: [dns.server], timeout: '1s', tries: 1 }, outbound: { mx_port: sink.port, tls: 'none', reuse } });
    daemons.push(d);
    const before = { connections: sink.connections, messages: sink.messages.length };
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true });
    for (let i = 0; i < 3; i++) {
      await t.sendMail({ envelope: { from: 'alice@example.test', to: [`r${i}@reuse.test`] }, raw: `Subject: ${i}\r\n\r\nbody ${i}\r\n` });
      // One at a time: each message is out before the next is accepted.
      await waitFor(() => sink.messages.length === before.messages + i + 1);
    }
    t.close();
    return { connections: sink.connections - before.connections, d };
  }

  it('three messages, one after another, over one connection; closed when the daemon stops', async () => {
    const { connections, d } = await relayThree({ idle_timeout: '1h' });
    assert.equal(connections, 1);
    assert.equal(sink.active, 1, 'the cached connection is still open');
    await d.stop();
    await waitFor(() => sink.active === 0);
  });

  it('max_messages: 1 opens a connection per message', async () => {
    const { connections } = await relayThree({ max_messages: 1 });
    assert.equal(connections, 3);
  });
});
