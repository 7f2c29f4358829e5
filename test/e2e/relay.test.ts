// End to end relay: `postern start` with dns.servers at a loopback DNS server and
// outbound.mx_port at smtp-server sinks. Mail accepted over SMTP from a trusted client and
// submitted with `postern sendmail -t` leaves by MX; `postern queue` lists, shows, retries and
// deletes; a SIGKILL while mail waits for a down next hop loses and duplicates nothing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type RunningDnsServer } from '../helpers/dns-server.js';
import { startSink, type RunningSink } from '../helpers/smtp-sink.js';
import { until } from '../helpers/wait.js';

const waitFor = (ok: () => boolean | Promise<boolean>, ms = 15_000) => until(ok, ms);

const spoolIds = async (d: RunningDaemon) => (await readdir(join(d.dataDir, 'spool', 'q')).catch(() => [] as string[])).filter((f) => /^[0-9A-Z]{18}$/.test(f));

describe('relay by MX, sendmail and queue tools', () => {
  let dns: RunningDnsServer;
  let sink: RunningSink;
  let d: RunningDaemon;
  const config = () => ({
    dns: { servers: [dns.server], timeout: '1s', tries: 1 },
    outbound: { mx_port: sink.port, tls: 'none', retry: ['300ms'] },
  });

  before(async () => {
    dns = await startDnsServer({ records: {} });
    sink = await startSink({}, 0, '127.0.0.21');
    dns.setRecords({ 'far.test': { MX: [{ exchange: 'mx.far.test', priority: 10 }] }, 'mx.far.test': { A: ['127.0.0.21'] } });
    d = await startDaemon(config());
    const r = await d.cli(['user', 'add', 'alice@example.test', '--no-password']);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d?.stop();
    await sink?.stop();
    await dns?.stop();
    if (d) await removeDir(d.dir);
  });

  it('relays a message from a trusted client to the MX, once, with a "." line intact', async () => {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true });
    const raw = 'From: alice@example.test\r\nTo: bob@far.test\r\nSubject: relay\r\n\r\nfirst\r\n.\r\nlast\r\n';
    await t.sendMail({ envelope: { from: 'alice@example.test', to: ['bob@far.test'] }, raw });
    t.close();
    await waitFor(() => sink.messages.length === 1);
    const got = sink.messages[0]!;
    assert.deepEqual(got.to, ['bob@far.test']);
    assert.ok(got.data.toString().endsWith(raw), 'the relayed bytes end with the message as sent');
    assert.match(got.data.toString(), /^Received: from /);
    await waitFor(async () => (await spoolIds(d)).length === 0);
  });

  it('postern sendmail -t: recipients from the header, Bcc removed, delivered by MX', async () => {
    const before = sink.messages.length;
    const r = await d.cli(['sendmail', '-t', '-f', 'alice@example.test'], 'To: carol@far.test\nBcc: dave@far.test\nSubject: via sendmail\n\nhello\n.\nnot read without -i\n');
    assert.equal(r.code, 0, r.stderr);
    await waitFor(() => sink.messages.length === before + 1);
    const m = sink.messages.at(-1)!;
    assert.deepEqual(m.to.sort(), ['carol@far.test', 'dave@far.test']);
    assert.equal(m.from, 'alice@example.test');
    const text = m.data.toString();
    assert.doesNotMatch(text, /^Bcc:/im);
    assert.match(text, /^Message-ID: </im);
    assert.match(text, /\r\n\r\nhello\r\n$/);
  });

  it('postern queue list / show / retry / delete while the next hop is down', async () => {
    await sink.down();
    const r1 = await d.cli(['sendmail', '-f', 'alice@example.test', 'eve@far.test'], 'Subject: waits\n\nbody\n');
    assert.equal(r1.code, 0, r1.stderr);
    const r2 = await d.cli(['sendmail', '-f', 'alice@example.test', 'frank@far.test'], 'Subject: deleted\n\nbody\n');
    assert.equal(r2.code, 0, r2.stderr);
    await waitFor(async () => {
      const l = await d.cli(['queue', 'list']);
      return (l.stdout.match(/deferred/g) ?? []).length === 2;
    });
    const list = await d.cli(['queue', 'list']);
    assert.equal(list.code, 0, list.stderr);
    // Blocks: an id line, then its recipients indented.
    const blocks = list.stdout.split(/\n(?=[0-9A-Z]{18} )/).map((b) => ({ id: b.slice(0, 18), text: b }));
    assert.equal(blocks.length, 2, list.stdout);
    const frankId = blocks.find((b) => b.text.includes('frank@far.test'))!.id;
    const eveId = blocks.find((b) => b.text.includes('eve@far.test'))!.id;
    const show = await d.cli(['queue', 'show', eveId]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /sender: <alice@example\.test>/);
    assert.match(show.stdout, /eve@far\.test {2}deferred/);
    assert.match(show.stdout, /Subject: waits/);
    const del = await d.cli(['queue', 'delete', frankId]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await spoolIds(d), [eveId]);
    const missing = await d.cli(['queue', 'show', frankId]);
    assert.equal(missing.code, 1);

    await sink.up();
    const before = sink.messages.length;
    const retry = await d.cli(['queue', 'retry']);
    assert.equal(retry.code, 0, retry.stderr);
    await waitFor(async () => (await spoolIds(d)).length === 0);
    const after = sink.messages.slice(before).map((m) => m.to[0]);
    assert.deepEqual(after, ['eve@far.test']);
  });

  it('SIGKILL while messages wait for a down next hop: each delivered exactly once after restart', async () => {
    await sink.down();
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true });
    for (let i = 0; i < 4; i++) {
      await t.sendMail({ envelope: { from: 'alice@example.test', to: [`k${i}@far.test`] }, raw: `Subject: k${i}\r\n\r\nbody ${i}\r\n` });
    }
    t.close();
    await new Promise((r) => setTimeout(r, 400));
    await d.kill();
    assert.equal((await spoolIds(d)).length, 4);
    const before = sink.messages.length;
    await sink.up();
    d = await startDaemon(config(), { dir: d.dir });
    await waitFor(async () => (await spoolIds(d)).length === 0);
    await new Promise((r) => setTimeout(r, 500));
    const got = sink.messages.slice(before).map((m) => m.to[0]).sort();
    assert.deepEqual(got, ['k0@far.test', 'k1@far.test', 'k2@far.test', 'k3@far.test']);
  });
});
