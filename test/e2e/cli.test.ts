// The `postern` bin as operators run it: a real child process per case (runCli spawns
// `node --import tsx src/cli.ts`), asserting exit codes and what lands on stdout and stderr.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { spawn } from 'node:child_process';
import { CLI, REPO, runCli, TSX } from '../helpers/daemon.js';
import { runCommand } from '../helpers/run-command.js';
import { storeFiles } from '../helpers/store-files.js';
import { REDIS_URL } from '../helpers/stores.js';

let dir: string;
const file = async (name: string, text: string) => {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Every case spawns its own process on its own files, so they run side by side.
describe('postern check-config', { concurrency: true }, () => {
  it('prints ok and exits 0 for a valid file', async () => {
    const cfg = await file('good.yaml', 'hostname: mx.example.test\ndomains: { local: [example.test] }\nlisten:\n  smtp: { port: 0 }\n');
    const r = await runCli(['check-config', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok: good.yaml\n');
    assert.equal(r.stderr, '');
  });

  it('prints each problem with file, line, column and key path, exit 1', async () => {
    const cfg = await file('bad.yaml', 'listen:\n  smtp:\n    port: "25"\nlistne: {}\nstore: { driver: mysql }\n');
    const r = await runCli(['check-config', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      'bad.yaml:3:5: listen.smtp.port: expected number, received string',
      'bad.yaml:4:1: listne: unknown key (did you mean "listen"?)',
      'bad.yaml:5:10: store.driver: expected one of "embedded", "redis", received "mysql"',
      '3 problems in bad.yaml',
    ]);
  });

  it('reports a YAML syntax error with its line and column', async () => {
    const cfg = await file('dup.yaml', 'hostname: a.example.test\nhostname: b.example.test\n');
    const r = await runCli(['check-config', '-c', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dup\.yaml:2:1: YAML: duplicate key "hostname"$/m);
  });

  it('finds the file through $POSTERN_CONFIG', async () => {
    const cfg = await file('env.yaml', 'foo: 1\n');
    const r = await runCli(['check-config'], { cwd: dir, env: { POSTERN_CONFIG: cfg } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^env\.yaml:1:1: foo: unknown key$/m);
  });

  it('checks ./postern.yaml when present, the defaults otherwise', async () => {
    const sub = await mkdtemp(join(dir, 'cwd-'));
    const none = await runCli(['check-config'], { cwd: sub, env: { POSTERN_CONFIG: '' } });
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /^ok: no config file, the built-in defaults$/m);
    await writeFile(join(sub, 'postern.yaml'), 'data_dir: ./spool\n');
    const local = await runCli(['check-config'], { cwd: sub, env: { POSTERN_CONFIG: '' } });
    assert.equal(local.code, 0, local.stderr);
    assert.equal(local.stdout, 'ok: postern.yaml\n');
  });

  it('a missing file is an error (exit 1), not the defaults', async () => {
    const r = await runCli(['check-config', '--config', join(dir, 'nope.yaml')], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope\.yaml: cannot read the config file: no such file/);
  });

  it('checks the configured TLS files', async () => {
    const cfg = await file('tls.yaml', 'tls: { cert: missing.crt, key: missing.key }\n');
    const r = await runCli(['check-config', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^tls\.yaml:1:8: tls\.cert: cannot read .*missing\.crt: no such file$/m);
  });

  it("checks each plugin entry against the plugin host, with the entry's line", async () => {
    const cfg = await file('plugins.yaml', 'plugins:\n  - relay-acl\n  - no-such-plugin\n');
    const r = await runCli(['check-config', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^plugins\.yaml:3:5: plugins\.1: .*no-such-plugin/m);
  });

  it("checks the sieve plugin's scripts: one that does not compile, one that does not exist, each at its key path", async () => {
    await file('cc-broken.sieve', 'if foo { keep; }\n');
    await file('cc-good.sieve', 'require "fileinto";\nfileinto "Archive";\n');
    const cfg = await file('cc-sieve.yaml', 'plugins:\n  - relay-acl\n  - sieve:\n      scripts: [cc-broken.sieve, cc-missing.sieve, cc-good.sieve]\n');
    const r = await runCli(['check-config', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      "cc-sieve.yaml:4:17: plugins.1.sieve.scripts.0: cc-broken.sieve:1:4: unknown test 'foo'",
      'cc-sieve.yaml:4:34: plugins.1.sieve.scripts.1: no such file: cc-missing.sieve',
      '2 problems in cc-sieve.yaml',
    ]);
    const good = await file('cc-sieve-good.yaml', 'plugins:\n  - sieve: { scripts: [cc-good.sieve] }\n');
    const ok = await runCli(['check-config', '--config', good], { cwd: dir });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'ok: cc-sieve-good.yaml\n');
  });

  it('an unknown option is a usage error (exit 2)', async () => {
    const r = await runCli(['check-config', '--bogus'], { cwd: dir });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--bogus'/);
  });
});

describe('postern help and dispatch', { concurrency: true }, () => {
  it('--help lists every command, exit 0', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['start', 'check-config', 'user', 'sieve', 'sendmail', 'queue']) assert.match(r.stdout, new RegExp(`^  ${c} `, 'm'));
  });

  it('no command prints usage on stderr, exit 2', async () => {
    const r = await runCli([]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^Usage: postern COMMAND/m);
  });

  it('an unknown command prints usage on stderr, exit 2', async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    assert.match(r.stderr, /^Usage: postern COMMAND/m);
  });

  const helps: [string[], RegExp][] = [
    [['start', '--help'], /^Usage: postern start \[--config FILE\]/],
    [['check-config', '--help'], /^Usage: postern check-config \[--config FILE\]/],
    [['check-config', '-h'], /^Usage: postern check-config/],
    [['help', 'start'], /^Usage: postern start/],
    [['user', '--help'], /^Usage: postern user add ADDRESS/],
    [['help', 'user'], /^Usage: postern user add ADDRESS/],
    [['sieve', '--help'], /^Usage: postern sieve /],
    [['sendmail', '--help'], /^Usage: postern sendmail /],
    [['queue', '--help'], /^Usage: postern queue /],
  ];
  for (const [args, want] of helps) {
    it(`${args.join(' ')} prints its usage, exit 0`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, want);
    });
  }

  it('help for an unknown command is a usage error', async () => {
    const r = await runCli(['help', 'frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
  });
});

describe('postern start', { concurrency: true }, () => {
  it('refuses an invalid config before starting anything: key path on stderr, exit 1', async () => {
    const cfg = await file('start-bad.yaml', `data_dir: ${JSON.stringify(join(dir, 'never'))}\nlisten:\n  smtp: { port: "x" }\n`);
    const r = await runCli(['start', '--config', cfg], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^start-bad\.yaml:3:11: listen\.smtp\.port: expected number, received string$/m);
  });

  it("refuses the sieve plugin's broken or missing script as check-config reports it, before starting anything", async () => {
    await file('start-broken.sieve', 'if foo { keep; }\n');
    const data = (name: string) => `data_dir: ${JSON.stringify(join(dir, name))}\nlisten:\n  smtp: { host: 127.0.0.1, port: 0 }\n`;
    const cases: [string, string, string][] = [
      ['start-broken.yaml', 'start-broken.sieve', "start-broken.yaml:5:24: plugins.0.sieve.scripts.0: start-broken.sieve:1:4: unknown test 'foo'"],
      ['start-missing.yaml', 'start-missing.sieve', 'start-missing.yaml:5:24: plugins.0.sieve.scripts.0: no such file: start-missing.sieve'],
    ];
    for (const [name, script, want] of cases) {
      const cfg = await file(name, `${data(`${name}.data`)}plugins:\n  - sieve: { scripts: [${script}] }\n`);
      const r = await runCli(['start', '--config', cfg], { cwd: dir });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr.trimEnd(), want);
      const check = await runCli(['check-config', '--config', cfg], { cwd: dir });
      assert.equal(check.stderr.split('\n')[0], want);
    }
  });

  it('an unknown option is a usage error (exit 2)', async () => {
    const r = await runCli(['start', '--port', '25']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--port'/);
  });
});

// A data_dir whose store a newer Postern wrote (its journal says format 2): commands that open the
// store refuse it with what to do, and leave every file as it was.
describe('a store written by a newer Postern', { concurrency: true }, () => {
  async function newerStore(name: string): Promise<{ cfg: string; files: () => Record<string, string> }> {
    const dataDir = join(dir, name);
    await mkdir(join(dataDir, 'state'), { recursive: true });
    await writeFile(join(dataDir, 'state', 'store.journal.0.jsonl'), '{"o":"format","v":2}\n{"o":"set","k":"user:a@example.test","v":"{}"}\n');
    const cfg = await file(`${name}.yaml`, `data_dir: ${JSON.stringify(dataDir)}\ndomains: { local: [example.test] }\nlisten:\n  smtp: { port: 0 }\n`);
    const files = () => storeFiles(dataDir);
    return { cfg, files };
  }
  const refusal = /store unavailable: .* is in store format 2, written by a newer Postern; this build reads format 1 and leaves it untouched\. Run the newer build/;

  for (const args of [['user', 'add', 'b@example.test', '--no-password'], ['user', 'list'], ['start']]) {
    it(`postern ${args.join(' ')} exits 1 with what to do, and writes nothing`, async () => {
      const s = await newerStore(`newer-${args.join('-')}`);
      const before = s.files();
      const r = await runCli([...args, '--config', s.cfg], { cwd: dir });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, refusal);
      assert.deepEqual(s.files(), before);
    });
  }
});

// The same with `store.driver: redis`: the deployment's format key (under this test's prefix)
// says 2. Each command exits 1 with what to do, and no key under the prefix changes.
describe('a Redis store written by a newer Postern', { concurrency: true }, () => {
  const prefix = `postern-test:${process.pid}-${randomBytes(4).toString('hex')}:`;
  const admin = new Redis(REDIS_URL, { lazyConnect: true });
  const snapshot = async () => {
    const out: Record<string, string | null> = {};
    for (const k of (await admin.keys(`${prefix}*`)).sort()) out[k] = (await admin.type(k)) === 'string' ? await admin.get(k) : JSON.stringify(await admin.hgetall(k));
    return out;
  };
  before(async () => {
    await admin.connect();
    await admin.set(`${prefix}store:format`, '2');
    await admin.set(`${prefix}dir:user:a@example.test`, '{"new":"layout"}');
  });
  after(async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length) await admin.del(...keys);
    await admin.quit();
  });
  const refusal = /store unavailable: Redis store redis:\/\/\S+ \(prefix "postern-test:[^"]+"\) is in store format 2, written by a newer Postern; this build reads format 1 and leaves it untouched\. Run the newer build/;

  for (const args of [['user', 'add', 'b@example.test', '--no-password'], ['user', 'list'], ['start']]) {
    it(`postern ${args.join(' ')} exits 1 with what to do, and writes nothing`, async () => {
      const name = `redis-newer-${args.join('-')}`;
      const cfg = await file(`${name}.yaml`, `data_dir: ${JSON.stringify(join(dir, name))}\ndomains: { local: [example.test] }\nstore: { driver: redis, url: ${JSON.stringify(REDIS_URL)}, prefix: ${JSON.stringify(prefix)} }\nlisten:\n  smtp: { port: 0 }\n`);
      const before = await snapshot();
      const r = await runCli([...args, '--config', cfg], { cwd: dir });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, refusal);
      assert.deepEqual(await snapshot(), before);
    });
  }
});

// `postern queue list | head -1`: the reader goes away before the output is written.
describe('output into a closed pipe', () => {
  it('postern queue list stops quietly (exit 0, no stack trace) when its reader has gone', async () => {
    const cfg = await file('epipe.yaml', `data_dir: ${JSON.stringify(join(dir, 'epipe-data'))}\ndomains: { local: [example.test] }\n`);
    for (let i = 0; i < 3; i++) {
      const r = await runCli(['sendmail', '--config', cfg, `r${i}@far.test`], { cwd: dir, input: 'Subject: x\n\nx\n' });
      assert.equal(r.code, 0, r.stderr);
    }
    const child = spawn(process.execPath, ['--import', TSX, CLI, 'queue', 'list', '--config', cfg], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the read end closes before anything is written: every write is EPIPE
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });
});

// CONTRACT.md: `node dist/cli.js …` after the build. The build compiles the root cli.ts to it.
describe('the dist/cli.js entry', () => {
  it('cli.ts, which the build turns into dist/cli.js, runs the same CLI', async () => {
    const r = await runCommand(process.execPath, ['--import', TSX, join(REPO, 'cli.ts'), 'user', '--help'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: postern user add ADDRESS/);
  });
});
