// The loader: built-ins, paths, packages; option validation with key paths; the plugins' own
// checks of the files their options name; init and close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fromObject, type Config } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/config/errors.js';
import { loadPipeline, validatePluginConfig, BUILTIN_DIR } from '../../../src/pipeline/loader.js';
import { fakeDirectory, unconfiguredResolver, DEFAULT_TEST_SESSION } from '../../../src/pipeline/harness.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { silentLogger } from '../../../src/log/logger.js';

const FIXTURES = resolve(import.meta.dirname, '..', '..', 'fixtures');
// A config "file" in the fixtures folder, so ./plugins/… resolves there.
const FILE = join(FIXTURES, 'postern.yaml');
const config = (plugins: unknown[], extra: Record<string, unknown> = {}): Config => fromObject({ plugins, domains: { local: ['example.test'] }, ...extra }, FILE);
const deps = () => ({ store: new MemoryStore(), directory: fakeDirectory(), dns: unconfiguredResolver(), log: silentLogger() });

async function problems(plugins: unknown[]): Promise<string[]> {
  try {
    await validatePluginConfig(config(plugins));
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems.map((p) => `${p.path}: ${p.message}`);
  }
  return [];
}

test("on_error: fail-open is refused for a plugin that says so (relay-acl), with the entry's key path", async () => {
  assert.deepEqual(await problems(['dnsbl', { 'relay-acl': { on_error: 'fail-open' } }]), [
    "plugins.1.relay-acl.on_error: relay-acl cannot fail open: while it fails, a later plugin's accept at RCPT would relay for anyone",
  ]);
  assert.deepEqual(await problems([{ 'relay-acl': { on_error: 'tempfail' } }, { dnsbl: { zones: ['bl.test'], on_error: 'fail-open' } }]), []);
});

test('the built-in folder is the repository plugins/ folder (works from src and dist alike)', () => {
  assert.equal(resolve(BUILTIN_DIR), resolve(import.meta.dirname, '..', '..', '..', 'plugins'));
});

test('loads built-ins, a path plugin, and runs init with its options', async () => {
  const d = deps();
  const p = await loadPipeline(config(['relay-acl', { dnsbl: { zones: ['bl.test'], timeout: '3s', on_error: 'fail-open' } }, { './plugins/sample-plugin.ts': { deny: ['bad.example'] } }, { auth: null }]), d);
  assert.deepEqual(p.names, ['relay-acl', 'dnsbl', 'sample', 'auth']);
  const notes = new Map();
  const r = await p.run('helo', { session: { ...DEFAULT_TEST_SESSION, helo: 'bad.example' }, notes });
  assert.deepEqual(r.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'Go away' });
  // relay-acl's connect hook ran with the global relay networks.
  const s = { ...DEFAULT_TEST_SESSION, remoteAddress: '::ffff:127.0.0.1' };
  await p.run('connect', { session: s, notes });
  assert.equal(s.relaying, true);
  await p.close();
  await d.store.close();
});

test('the default chain (no plugins key) loads', async () => {
  const d = deps();
  const c = fromObject({}, FILE);
  const p = await loadPipeline(c, d);
  assert.deepEqual(p.names, ['auth', 'relay-acl']);
  await p.close();
  await d.store.close();
});

test('every problem is reported with its key path', async () => {
  const got = await problems([
    { dnsbl: { zones: 'zen.example' } },
    { auth: { max_failures: 'five', timeout: 'forever' } },
    'no-such-plugin-anywhere',
    './plugins/missing.js',
    './plugins/not-a-plugin.ts',
    { 'relay-acl': { on_error: 'ignore', extra: 1 } },
  ]);
  assert.equal(got.length, 8, got.join('\n'));
  assert.match(got[0]!, /^plugins\.0\.dnsbl\.zones: .*expected (an? )?(array|list)/);
  assert.match(got.find((g) => g.startsWith('plugins.1.auth.timeout'))!, /expected a duration/);
  assert.match(got.find((g) => g.startsWith('plugins.1.auth.max_failures'))!, /expected (a )?number/);
  assert.match(got.find((g) => g.startsWith('plugins.2:'))!, /unknown plugin "no-such-plugin-anywhere"/);
  assert.match(got.find((g) => g.startsWith('plugins.3:'))!, /not found/);
  assert.match(got.find((g) => g.startsWith('plugins.4:'))!, /is not a plugin/);
  assert.ok(got.includes('plugins.5.relay-acl.extra: unknown key'), got.join('\n'));
  assert.ok(got.some((g) => g.startsWith('plugins.5.relay-acl.on_error')), got.join('\n'));
});

test('a plugin may appear only once', async () => {
  const got = await problems(['auth', { auth: { max_failures: 3 } }]);
  assert.deepEqual(got, ['plugins.1.auth: plugin "auth" is already in the chain at plugins.0']);
});

test('an absolute path and a package name resolve', async () => {
  assert.deepEqual(await problems([join(FIXTURES, 'plugins', 'sample-plugin.ts')]), []);
  // "zod" is an installed package but not a plugin: found, then refused by shape.
  const got = await problems(['zod']);
  assert.equal(got.length, 1);
  assert.match(got[0]!, /plugin package "zod" is not a plugin/);
});

test('validation does not run init; a failing init closes what was opened', async () => {
  // relay-acl's init refuses a bad global network; validation alone does not notice. The config
  // schema refuses one too, so it is put in after parsing, as a stand-in for any failing init.
  const c = config(['./plugins/sample-plugin.ts', 'relay-acl']);
  c.relay.networks = ['999.0.0.0/8'];
  await validatePluginConfig(c);
  await assert.rejects(loadPipeline(c, deps()), /plugin relay-acl: init failed: .*999\.0\.0\.0\/8/);
});

test("a plugin's checkFiles: each problem under the entry's key path, with the others, and no init runs", async () => {
  const { inits } = await import('../../fixtures/plugins/checked-plugin.js');
  const plugins = [{ './plugins/checked-plugin.ts': { files: ['plugins/sample-plugin.ts', 'nope.txt', 'plugins/nope.js'] } }, { dnsbl: { zones: 'zen.example' } }];
  const entry = 'plugins.0."./plugins/checked-plugin.ts"';
  const got = await problems(plugins);
  assert.deepEqual(
    got.filter((g) => g.startsWith('plugins.0')),
    [`${entry}.files.1: no such file: nope.txt`, `${entry}.files.2: no such file: plugins/nope.js`],
  );
  assert.ok(got.some((g) => g.startsWith('plugins.1.dnsbl.zones')), got.join('\n'));
  // The same problems stop a start, before any init.
  const before = inits.count;
  await assert.rejects(loadPipeline(config([{ './plugins/checked-plugin.ts': { files: ['nope.txt'] } }]), deps()), (e: unknown) => e instanceof ConfigError && e.problems.map((p) => `${p.path}: ${p.message}`).join() === `${entry}.files.0: no such file: nope.txt`);
  assert.equal(inits.count, before);
  // A check that throws is one problem at the entry; one with nothing to say lets the load go on.
  assert.deepEqual(await problems([{ './plugins/checked-plugin.ts': { explode: true } }]), [`${entry}: checked: cannot check its files: boom`]);
  const d = deps();
  const p = await loadPipeline(config([{ './plugins/checked-plugin.ts': { files: ['plugins/sample-plugin.ts'] } }]), d);
  assert.equal(inits.count, before + 1);
  await p.close();
  await d.store.close();
});

test('the sieve plugin checks its scripts: a file that does not compile, one that does not exist, at their key paths', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-loader-'));
  try {
    await writeFile(join(dir, 'broken.sieve'), 'if foo { keep; }\n');
    await writeFile(join(dir, 'good.sieve'), 'keep;\n');
    const c = fromObject({ plugins: [{ sieve: { scripts: ['broken.sieve', 'missing.sieve', 'good.sieve'] } }] }, join(dir, 'postern.yaml'));
    const want = ["plugins.0.sieve.scripts.0: broken.sieve:1:4: unknown test 'foo'", 'plugins.0.sieve.scripts.1: no such file: missing.sieve'];
    const err = await validatePluginConfig(c).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError, String(err));
    assert.deepEqual(err.problems.map((p) => `${p.path}: ${p.message}`), want);
    // Start refuses with the same problems, not with an init failure.
    await assert.rejects(loadPipeline(c, deps()), (e: unknown) => e instanceof ConfigError && JSON.stringify(e.problems.map((p) => `${p.path}: ${p.message}`)) === JSON.stringify(want));
    const ok = fromObject({ plugins: [{ sieve: { scripts: ['good.sieve'] } }] }, join(dir, 'postern.yaml'));
    await validatePluginConfig(ok);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
