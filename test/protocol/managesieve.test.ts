// The ManageSieve listener over raw sockets (RFC 5804), in process on port 0, with the embedded
// store in a temp dir and the store-backed directory: capabilities before and after STARTTLS,
// AUTHENTICATE PLAIN, every script command and its response codes, and hostile input.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createDirectory } from '../../src/directory/index.js';
import { silentLogger } from '../../src/log/logger.js';
import { MAX_BAD_COMMANDS, MAX_SCRIPTS_PER_USER } from '../../src/managesieve/limits.js';
import { getActiveScript, SIEVE_CHANNEL } from '../../src/managesieve/repository.js';
import { createManageSieveListener, type ManageSieveListener } from '../../src/managesieve/server.js';
import { createEmbeddedStore } from '../../src/store/embedded.js';
import type { Store } from '../../src/store/store.js';
import { SieveTranscript } from '../helpers/managesieve-client.js';
import { testTls } from '../helpers/tls.js';

const DELAY = 40;
let dir: string;
let store: Store;
let listener: ManageSieveListener;
let port: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-managesieve-'));
  store = createEmbeddedStore(dir);
  const directory = createDirectory({ store, localDomains: ['example.test'], scrypt: { N: 1024, r: 8, p: 1 } });
  await directory.addUser('alice@example.test', 'alice-pw');
  await directory.addUser('bob@example.test', 'bob-pw');
  listener = createManageSieveListener({
    config: { listen: { managesieve: { host: '127.0.0.1', port: 0 } }, sieve: { limits: { max_redirects: 4 } } } as never,
    log: silentLogger(),
    directory,
    store,
    tls: await testTls(),
    authFailureDelayMs: DELAY,
  });
  port = (await listener.listen()).port;
});

after(async () => {
  await listener.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function greeted(): Promise<SieveTranscript> {
  const s = await SieveTranscript.open(port);
  const g = await s.response();
  assert.match(g.status, /^OK/);
  return s;
}

/** Connected, under TLS, logged in as `user`. */
async function login(user = 'alice@example.test', password = 'alice-pw'): Promise<SieveTranscript> {
  const s = await greeted();
  await s.starttls();
  await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain(user, password)}"`, 'OK');
  return s;
}

const literal = (text: string) => `{${Buffer.byteLength(text)}+}\r\n${text}`;

describe('ManageSieve (RFC 5804)', () => {
  it('capabilities: SASL waits for STARTTLS; after the handshake they are re-sent unasked (§1.7, §2.2)', async () => {
    const s = await SieveTranscript.open(port);
    const g = await s.response();
    assert.equal(g.lines[0], '"IMPLEMENTATION" "Postern"');
    assert.ok(g.lines.includes('"SASL" ""'));
    assert.ok(g.lines.includes('"STARTTLS"'));
    assert.ok(g.lines.includes('"VERSION" "1.0"'));
    assert.ok(g.lines.includes('"MAXREDIRECTS" "4"'));
    const sieve = g.lines.find((l) => l.startsWith('"SIEVE" '));
    for (const ext of ['fileinto', 'vacation', 'imap4flags', 'variables']) assert.match(sieve ?? '', new RegExp(`[" ]${ext}[" ]`));
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('alice@example.test', 'alice-pw')}"`, 'NO (ENCRYPT-NEEDED)');
    await s.cmd('LISTSCRIPTS', 'NO');
    const after = await s.starttls();
    assert.match(after.status, /^OK/);
    assert.ok(after.lines.includes('"SASL" "PLAIN"'));
    assert.ok(!after.lines.includes('"STARTTLS"'));
    await s.cmd('STARTTLS', 'NO');
    // sieve-connect resynchronizes after STARTTLS with exactly this (§2.13).
    await s.cmd('NOOP "STARTTLS-RESYNC-CAPA"', 'OK (TAG "STARTTLS-RESYNC-CAPA")');
    await s.cmd('LOGOUT', 'OK');
    await s.waitClosed();
  });

  it('STARTTLS throws away commands pipelined in clear after it', async () => {
    const s = await greeted();
    s.send('STARTTLS\r\nLOGOUT\r\n');
    const caps = await s.starttlsAfterSend();
    assert.match(caps.status, /^OK/);
    await s.cmd('NOOP "still-here"', 'OK (TAG "still-here")');
    s.close();
  });

  it('AUTHENTICATE PLAIN: bad password (delayed), foreign authzid, cancel, continuation, OWNER', async () => {
    const s = await greeted();
    await s.starttls();
    const t0 = Date.now();
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('alice@example.test', 'wrong')}"`, 'NO');
    assert.ok(Date.now() - t0 >= DELAY - 5, 'a failure is answered after a delay');
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('alice@example.test', 'alice-pw', 'bob@example.test')}"`, 'NO (AUTH-TOO-WEAK)');
    await s.cmd('AUTHENTICATE "DIGEST-MD5"', 'NO');
    s.send('AUTHENTICATE "PLAIN"\r\n');
    assert.equal(await s.line(), '""');
    await s.cmd('"*"', 'NO');
    s.send('AUTHENTICATE "plain"\r\n');
    assert.equal(await s.line(), '""');
    await s.cmd(literal(s.plain('Alice@Example.Test', 'alice-pw')), 'OK');
    const caps = await s.cmd('CAPABILITY', 'OK');
    assert.ok(caps.lines.includes('"OWNER" "alice@example.test"'));
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('alice@example.test', 'alice-pw')}"`, 'NO');
    await s.cmd('UNAUTHENTICATE', 'OK');
    await s.cmd('LISTSCRIPTS', 'NO');
    s.close();
  });

  it('three failed logins end the session with BYE', async () => {
    const s = await greeted();
    await s.starttls();
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('alice@example.test', 'x')}"`, 'NO');
    await s.cmd('AUTHENTICATE "PLAIN" "not base64!"', 'NO');
    await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('nobody@example.test', 'x')}"`, 'BYE');
    await s.waitClosed();
  });

  it('scripts: put, list, activate, get, rename, delete, with their response codes (§2.5–§2.12)', async () => {
    const events: { op: string; user: string }[] = [];
    const unsubscribe = store.subscribe(SIEVE_CHANNEL, (ev) => events.push(JSON.parse(ev.message) as { op: string; user: string }));
    const s = await login();
    const script = 'require "fileinto";\r\n# Grüße\r\nif header :contains "subject" "x" { fileinto "X"; }\r\n';
    await s.cmd(`PUTSCRIPT "main" ${literal(script)}`, 'OK');
    await s.cmd(`PUTSCRIPT "spare" "keep;"`, 'OK');
    assert.deepEqual((await s.cmd('LISTSCRIPTS')).lines, ['"main"', '"spare"']);
    await s.cmd('SETACTIVE "main"', 'OK');
    assert.deepEqual((await s.cmd('LISTSCRIPTS')).lines, ['"main" ACTIVE', '"spare"']);
    const got = await s.cmd('GETSCRIPT "main"', 'OK');
    assert.deepEqual(got.lines, [`{${Buffer.byteLength(script)}}\r\n${script}`]);
    assert.deepEqual(await getActiveScript(store, 'alice@example.test'), { name: 'main', script });
    await s.cmd('GETSCRIPT "nope"', 'NO (NONEXISTENT)');
    await s.cmd('SETACTIVE "nope"', 'NO (NONEXISTENT)');
    await s.cmd('DELETESCRIPT "main"', 'NO (ACTIVE)');
    await s.cmd('DELETESCRIPT "nope"', 'NO (NONEXISTENT)');
    await s.cmd('RENAMESCRIPT "main" "spare"', 'NO (ALREADYEXISTS)');
    await s.cmd('RENAMESCRIPT "nope" "other"', 'NO (NONEXISTENT)');
    await s.cmd('RENAMESCRIPT "main" "primary"', 'OK');
    assert.equal((await getActiveScript(store, 'alice@example.test'))?.name, 'primary');
    await s.cmd('HAVESPACE "x" 100', 'OK');
    await s.cmd('HAVESPACE "x" 100000000', 'NO (QUOTA/MAXSIZE)');
    await s.cmd('HAVESPACE "x" "100"', 'NO');
    await s.cmd('PUTSCRIPT "" "keep;"', 'NO');
    await s.cmd('SETACTIVE ""', 'OK');
    assert.equal(await getActiveScript(store, 'alice@example.test'), null);
    await s.cmd('DELETESCRIPT "primary"', 'OK');
    assert.deepEqual((await s.cmd('LISTSCRIPTS')).lines, ['"spare"']);
    await s.cmd('LOGOUT', 'OK');
    // Bob sees none of Alice's scripts.
    const b = await login('bob@example.test', 'bob-pw');
    assert.deepEqual((await b.cmd('LISTSCRIPTS')).lines, []);
    b.close();
    unsubscribe();
    assert.ok(events.some((e) => e.op === 'activate' && e.user === 'alice@example.test'));
  });

  it('an invalid script is refused with "line N: message" and nothing is stored (§2.6, §2.12)', async () => {
    const s = await login('bob@example.test', 'bob-pw');
    const bad = 'keep;\r\nfilein "x";\r\n';
    const r = await s.cmd(`PUTSCRIPT "bad" ${literal(bad)}`, 'NO');
    assert.match(r.status, /^NO "line 2: .*filein/);
    await s.cmd('GETSCRIPT "bad"', 'NO (NONEXISTENT)');
    const two = await s.cmd(`CHECKSCRIPT ${literal('filein "a";\r\nredirect;\r\n')}`, 'NO');
    assert.match(two.status, /^NO \{\d+\}\r\nline 1: .*\r\nline 2: /);
    await s.cmd(`CHECKSCRIPT ${literal('keep;')}`, 'OK');
    s.send(Buffer.concat([Buffer.from('CHECKSCRIPT {2+}\r\n'), Buffer.from([0xc3, 0x28]), Buffer.from('\r\n')]));
    assert.match((await s.response()).status, /^NO .*UTF-8/);
    s.close();
  });

  it('refuses a script beyond the per-user count quota (QUOTA/MAXSCRIPTS)', async () => {
    const s = await login('bob@example.test', 'bob-pw');
    for (let i = 0; i < MAX_SCRIPTS_PER_USER; i++) s.send(`PUTSCRIPT "q${i}" "keep;"\r\n`);
    for (let i = 0; i < MAX_SCRIPTS_PER_USER; i++) assert.match((await s.response()).status, /^OK/);
    await s.cmd('PUTSCRIPT "one-too-many" "keep;"', 'NO (QUOTA/MAXSCRIPTS)');
    await s.cmd('PUTSCRIPT "q0" "discard;"', 'OK');
    s.close();
  });

  it('an idle session is closed with BYE; close() says BYE (TRYLATER) to open sessions', async () => {
    const quick = createManageSieveListener({
      config: { listen: { managesieve: { host: '127.0.0.1', port: 0 } }, sieve: { limits: { max_redirects: 4 } } } as never,
      log: silentLogger(),
      directory: { authenticate: () => Promise.resolve(null) },
      store,
      tls: await testTls(),
      idleTimeoutMs: 150,
    });
    const p = (await quick.listen()).port;
    const idle = await SieveTranscript.open(p);
    await idle.response();
    assert.match((await idle.response()).status, /^BYE "Disconnected for inactivity"/);
    await idle.waitClosed();
    const open = await SieveTranscript.open(p);
    await open.response();
    const closing = quick.close();
    assert.match((await open.response()).status, /^BYE \(TRYLATER\)/);
    await closing;
    assert.ok(open.closed);
  });

  it('hostile input: HTTP, bad literals, oversized literal and line, too many bad commands', async () => {
    const h = await greeted();
    await h.cmd('GET / HTTP/1.1', 'NO');
    await h.cmd('NOOP "unterminated', 'NO');
    await h.cmd('NOOP {3+}x', 'NO');
    // Larger than a script may be, but small enough to read and drop: the session goes on.
    h.send(`NOOP {300000+}\r\n${'x'.repeat(300000)}\r\n`);
    assert.match((await h.response()).status, /^NO \(QUOTA\/MAXSIZE\)/);
    await h.cmd('NOOP', 'OK');
    h.send('PUTSCRIPT "x" {4294967295+}\r\n');
    assert.match((await h.response()).status, /^BYE/);
    await h.waitClosed();

    const long = await greeted();
    long.send(`NOOP "${'a'.repeat(20000)}"\r\n`);
    assert.match((await long.response()).status, /^BYE/);
    await long.waitClosed();

    const noisy = await greeted();
    for (let i = 1; i < MAX_BAD_COMMANDS; i++) await noisy.cmd(`BOGUS${i}`, 'NO');
    await noisy.cmd('BOGUS', 'BYE');
    await noisy.waitClosed();
  });
});

describe('sieve.extensions', () => {
  it('only the enabled extensions are advertised, and a script requiring another is refused', async () => {
    const directory = createDirectory({ store, localDomains: ['example.test'], scrypt: { N: 1024, r: 8, p: 1 } });
    await directory.addUser('carol@example.test', 'carol-pw');
    const limited = createManageSieveListener({
      config: { listen: { managesieve: { host: '127.0.0.1', port: 0 } }, sieve: { limits: { max_redirects: 4 }, extensions: ['fileinto', 'envelope'] } } as never,
      log: silentLogger(),
      directory,
      store,
      tls: await testTls(),
      authFailureDelayMs: DELAY,
    });
    const limitedPort = (await limited.listen()).port;
    try {
      const s = await SieveTranscript.open(limitedPort);
      const g = await s.response();
      assert.ok(g.lines.includes('"SIEVE" "envelope fileinto"'), g.lines.join('\n'));
      await s.starttls();
      await s.cmd(`AUTHENTICATE "PLAIN" "${s.plain('carol@example.test', 'carol-pw')}"`, 'OK');
      const r = await s.cmd(`PUTSCRIPT "away" ${literal('require "vacation";\r\nvacation "away";\r\n')}`, 'NO');
      assert.match(r.status, /extension "vacation" is not enabled here/);
      await s.cmd('GETSCRIPT "away"', 'NO (NONEXISTENT)');
      await s.cmd(`PUTSCRIPT "sort" ${literal('require "fileinto";\r\nfileinto "x";\r\n')}`, 'OK');
      s.close();
    } finally {
      await limited.close();
    }
  });
});
