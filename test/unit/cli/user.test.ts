// `postern user …`: subcommands, password input (stdin line, hidden terminal prompt), refusals
// with their messages and exit codes, and the promise that matters most: a user added by the
// command in another process is usable by a running daemon's directory without a restart.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { runUserCommand, type UserCommandIo } from '../../../src/cli/user.js';
import { createDirectory } from '../../../src/directory/store-directory.js';
import type { ScryptParams } from '../../../src/directory/password.js';
import { createEmbeddedStore } from '../../../src/store/embedded.js';
import { createMemoryStore } from '../../../src/store/memory.js';
import type { Store } from '../../../src/store/store.js';
import { waitFor } from '../store/contract.js';

const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };
const root = mkdtempSync(join(tmpdir(), 'postern-cli-user-'));
after(() => rmSync(root, { recursive: true, force: true }));

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
    this.text += chunk.toString('utf8');
    cb();
  }
}

/** A terminal stdin: each time echo goes off (a prompt), it types the next answer. */
function fakeTty(answers: string[]) {
  const s = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode: (m: boolean) => void; raw: boolean[] };
  s.isTTY = true;
  s.raw = [];
  s.setRawMode = (m: boolean) => {
    s.raw.push(m);
    if (m) {
      const next = answers.shift();
      if (next !== undefined) setImmediate(() => s.write(next));
    }
  };
  return s;
}

const CONFIG = { data_dir: root, domains: { local: ['example.test', 'example.org'] }, store: { driver: 'embedded' as const } };

async function run(argv: string[], opts: { stdin?: Readable | string; store?: Store; config?: UserCommandIo['config'] } = {}) {
  const stdout = new Sink();
  const stderr = new Sink();
  const stdin = typeof opts.stdin === 'string' || opts.stdin === undefined ? Readable.from(opts.stdin === undefined ? [] : [opts.stdin]) : opts.stdin;
  const store = opts.store ?? createMemoryStore();
  const code = await runUserCommand(argv, { stdin, stdout, stderr, config: opts.config ?? CONFIG, store, scrypt: FAST });
  return { code, out: stdout.text, err: stderr.text, store };
}

const dirOf = (store: Store) => createDirectory({ store, localDomains: CONFIG.domains.local, scrypt: FAST });

describe('postern user: add', () => {
  const ok: [string, string, string][] = [
    ['a line', 'secret\n', 'secret'],
    ['a CRLF line, the rest ignored', 'secret\r\nnext line\n', 'secret'],
    ['no newline at the end', 'secret', 'secret'],
    ['spaces kept', ' pass word \n', ' pass word '],
  ];
  for (const [name, input, password] of ok) {
    it(`--password-stdin: ${name}`, async () => {
      const r = await run(['add', 'Alice@Example.Test', '--password-stdin'], { stdin: input });
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'added alice@example.test\n');
      assert.equal(r.err, '');
      assert.equal(await dirOf(r.store).authenticate('alice@example.test', password), 'alice@example.test');
    });
  }

  const refused: [string, string[], string, number, RegExp][] = [
    ['an empty password', ['add', 'a@example.test', '--password-stdin'], '\n', 1, /password is empty/],
    ['empty stdin', ['add', 'a@example.test', '--password-stdin'], '', 1, /password is empty/],
    ['a domain not in domains.local', ['add', 'a@remote.example', '--password-stdin'], 'x\n', 1, /domain remote\.example is not in domains\.local \(example\.test, example\.org\)/],
    ['a malformed address', ['add', 'not-an-address', '--password-stdin'], 'x\n', 1, /invalid address "not-an-address": address must be local@domain/],
    ['a percent-hack address', ['add', 'a%b.example@example.test', '--password-stdin'], 'x\n', 1, /not allowed here \(percent-hack\)/],
    ['a non-terminal stdin without --password-stdin', ['add', 'a@example.test'], 'x\n', 1, /stdin is not a terminal: pass --password-stdin/],
  ];
  for (const [name, argv, stdin, code, message] of refused) {
    it(`refuses ${name}`, async () => {
      const r = await run(argv, { stdin });
      assert.equal(r.code, code);
      assert.match(r.err, message);
      assert.match(r.err, /^postern user: /);
      assert.equal(r.out, '');
      assert.deepEqual(await dirOf(r.store).listUsers(), []);
    });
  }

  it('refuses a duplicate, in any case, before reading a password', async () => {
    const store = createMemoryStore();
    assert.equal((await run(['add', 'bob@example.test', '--password-stdin'], { stdin: 'one\n', store })).code, 0);
    const stdin = new PassThrough(); // never written: a read would hang the test
    const r = await run(['add', 'BOB@example.test', '--password-stdin'], { stdin, store });
    assert.equal(r.code, 1);
    assert.match(r.err, /user bob@example\.test already exists/);
    assert.equal(await dirOf(store).authenticate('bob@example.test', 'one'), 'bob@example.test');
  });

  it('explains an empty domains.local', async () => {
    const r = await run(['add', 'a@example.test', '--password-stdin'], { stdin: 'x\n', config: { ...CONFIG, domains: { local: [] } } });
    assert.equal(r.code, 1);
    assert.match(r.err, /domains\.local is empty/);
  });

  it('--no-password adds a user that receives mail but cannot log in', async () => {
    const r = await run(['add', 'inbox@example.test', '--no-password']);
    assert.equal(r.code, 0, r.err);
    const d = dirOf(r.store);
    assert.deepEqual(await d.resolve('inbox@example.test'), { kind: 'local', user: 'inbox@example.test' });
    assert.equal(await d.authenticate('inbox@example.test', ''), null);
  });

  it('on a terminal: prompts twice on stderr with echo off', async () => {
    const tty = fakeTty(['s3cr\x7fret\r', 's3cret\r']);
    const r = await run(['add', 'carol@example.test'], { stdin: tty });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, 'Password: \nRetype password: \n');
    assert.deepEqual(tty.raw, [true, false, true, false]);
    assert.equal(await dirOf(r.store).authenticate('carol@example.test', 's3cret'), 'carol@example.test');
  });

  const ttyRefused: [string, string[], RegExp][] = [
    ['a mismatch', ['one\r', 'two\r'], /passwords do not match/],
    ['Ctrl-C', ['abc\u0003'], /aborted/],
    ['Ctrl-D on an empty line', ['\u0004'], /aborted/],
    ['an empty password', ['\r'], /password is empty/],
  ];
  for (const [name, answers, message] of ttyRefused) {
    it(`on a terminal: refuses ${name}`, async () => {
      const r = await run(['add', 'carol@example.test'], { stdin: fakeTty(answers) });
      assert.equal(r.code, 1);
      assert.match(r.err, message);
      assert.deepEqual(await dirOf(r.store).listUsers(), []);
    });
  }
});

describe('postern user: passwd, del, list, aliases', () => {
  it('passwd replaces the password; an unknown user is refused without reading stdin', async () => {
    const store = createMemoryStore();
    await run(['add', 'dave@example.test', '--password-stdin'], { stdin: 'old\n', store });
    const r = await run(['passwd', 'DAVE@example.test', '--password-stdin'], { stdin: 'new\n', store });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'password changed for dave@example.test\n');
    const d = dirOf(store);
    assert.equal(await d.authenticate('dave@example.test', 'old'), null);
    assert.equal(await d.authenticate('dave@example.test', 'new'), 'dave@example.test');
    const u = await run(['passwd', 'nobody@example.test', '--password-stdin'], { stdin: new PassThrough(), store });
    assert.equal(u.code, 1);
    assert.match(u.err, /no such user: nobody@example\.test/);
    const e = await run(['passwd', 'dave@example.test', '--password-stdin'], { stdin: '\n', store });
    assert.equal(e.code, 1);
    assert.match(e.err, /password is empty/);
  });

  it('list prints one address a line, sorted; del removes; del of an unknown user fails', async () => {
    const store = createMemoryStore();
    for (const a of ['zed@example.test', 'amy@example.org', 'Mid@example.test']) await run(['add', a, '--no-password'], { store });
    const l = await run(['list'], { store });
    assert.equal(l.code, 0);
    assert.equal(l.out, 'amy@example.org\nmid@example.test\nzed@example.test\n');
    const d = await run(['del', 'ZED@example.test'], { store });
    assert.equal(d.code, 0);
    assert.equal(d.out, 'deleted zed@example.test\n');
    const again = await run(['del', 'zed@example.test'], { store });
    assert.equal(again.code, 1);
    assert.match(again.err, /no such user: zed@example\.test/);
    assert.equal((await run(['list'], { store })).out, 'amy@example.org\nmid@example.test\n');
    assert.equal((await run(['list'], { store: createMemoryStore() })).out, '');
  });

  it('alias, aliases and unalias', async () => {
    const store = createMemoryStore();
    await run(['add', 'amy@example.test', '--no-password'], { store });
    const a = await run(['alias', 'Team@example.test', 'amy@example.test', 'Ext@Remote.Example'], { store });
    assert.equal(a.code, 0, a.err);
    assert.equal(a.out, 'alias team@example.test: amy@example.test, Ext@remote.example\n');
    assert.deepEqual(await dirOf(store).resolve('team@example.test'), { kind: 'alias', targets: ['amy@example.test', 'Ext@remote.example'] });
    assert.equal((await run(['aliases'], { store })).out, 'team@example.test: amy@example.test, Ext@remote.example\n');
    const bad = await run(['alias', 'x@remote.example', 'amy@example.test'], { store });
    assert.equal(bad.code, 1);
    assert.match(bad.err, /not in domains\.local/);
    const badTarget = await run(['alias', 'x@example.test', 'no target'], { store });
    assert.equal(badTarget.code, 1);
    assert.match(badTarget.err, /invalid address "no target"/);
    assert.equal((await run(['unalias', 'team@example.test'], { store })).code, 0);
    const gone = await run(['unalias', 'team@example.test'], { store });
    assert.equal(gone.code, 1);
    assert.match(gone.err, /no such alias: team@example\.test/);
  });
});

describe('postern user: usage', () => {
  const cases: [string[], RegExp][] = [
    [[], /a subcommand is required/],
    [['frobnicate'], /unknown subcommand 'frobnicate'/],
    [['add'], /'add' takes one ADDRESS/],
    [['add', 'a@example.test', 'b@example.test'], /'add' takes one ADDRESS/],
    [['list', 'extra'], /'list' takes no arguments/],
    [['alias', 'a@example.test'], /takes an ADDRESS and at least one TARGET/],
    [['add', 'a@example.test', '--bogus'], /Unknown option '--bogus'/],
    [['del', 'a@example.test', '--password-stdin'], /--password-stdin goes with add and passwd only/],
    [['add', 'a@example.test', '--password-stdin', '--no-password'], /exclude each other/],
  ];
  for (const [argv, message] of cases) {
    it(`exit 2 for ${JSON.stringify(argv)}`, async () => {
      const r = await run(argv);
      assert.equal(r.code, 2);
      assert.match(r.err, message);
      assert.match(r.err, /postern user --help/);
    });
  }

  it('--help prints the usage on stdout, exit 0; a leading "user" is accepted', async () => {
    const r = await run(['user', 'add', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.out, /^Usage: postern user add ADDRESS/);
  });

  it('without a loaded config it reads --config FILE and opens the store under its data_dir', async () => {
    const dir = mkdtempSync(join(root, 'cfg-'));
    const file = join(dir, 'postern.yaml');
    writeFileSync(file, 'data_dir: ./data\ndomains:\n  local: [example.test]\n');
    const io = (stdin: string) => ({ stdin: Readable.from([stdin]), stdout: new Sink(), stderr: new Sink(), env: {}, scrypt: FAST });
    const add = io('pw\n');
    assert.equal(await runUserCommand(['add', 'fay@example.test', '--password-stdin', '--config', file], add), 0, add.stderr.text);
    const list = io('');
    assert.equal(await runUserCommand(['list', '-c', file], list), 0);
    assert.equal(list.stdout.text, 'fay@example.test\n');
    const store = createEmbeddedStore(join(dir, 'data'));
    try {
      assert.equal(await dirOf(store).authenticate('fay@example.test', 'pw'), 'fay@example.test');
    } finally {
      await store.close();
    }
  });
});

describe('postern user in another process, daemon running', () => {
  it('a user added by the CLI in a child process logs in and resolves here without a restart', async () => {
    const dataDir = mkdtempSync(join(root, 'daemon-'));
    const store = createEmbeddedStore(dataDir);
    const daemon = createDirectory({ store, localDomains: ['example.test'] });
    const cli = (argv: string[], input: string) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const code = `
          const { runUserCommand } = await import(process.argv[1]);
          const { fromObject } = await import(process.argv[2]);
          const config = fromObject({ data_dir: process.argv[3], domains: { local: ['example.test'] } }, null);
          process.exitCode = await runUserCommand(process.argv.slice(4), { config, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
        `;
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', '--input-type=module', '-e', code, new URL('../../../src/cli/user.ts', import.meta.url).href, new URL('../../../src/config/load.ts', import.meta.url).href, dataDir, ...argv],
          { stdio: ['pipe', 'pipe', 'pipe'] },
        );
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (c) => resolve({ code: c, out, err }));
        child.stdin.end(input);
      });
    try {
      // The daemon has looked before: a cached miss must not hide the new user.
      assert.deepEqual(await daemon.resolve('gus@example.test'), { kind: 'unknown' });
      const added = await cli(['add', 'gus@example.test', '--password-stdin'], 'hunter2\n');
      assert.equal(added.code, 0, added.err);
      assert.equal(added.out, 'added gus@example.test\n');
      assert.equal(await daemon.authenticate('gus@example.test', 'hunter2'), 'gus@example.test');
      assert.deepEqual(await daemon.resolve('gus+lists@example.test'), { kind: 'local', user: 'gus@example.test', detail: 'lists' });

      const deleted = await cli(['del', 'gus@example.test'], '');
      assert.equal(deleted.code, 0, deleted.err);
      await waitFor(async () => (await daemon.authenticate('gus@example.test', 'hunter2')) === null, 'the deletion to reach the daemon', 2000);
      assert.deepEqual(await daemon.resolve('gus@example.test'), { kind: 'unknown' });
    } finally {
      daemon.close();
      await store.close();
    }
  });
});
