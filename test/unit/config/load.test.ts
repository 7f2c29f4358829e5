// Config loading against the fixtures in test/fixtures/config: every bad file yields exactly the
// problems its `# expect:` lines name (position, key path, wording), every good file loads with
// the values asserted here; relative paths, defaults and the lookup order.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError } from '../../../src/config/errors.js';
import { findConfigFile, fromObject, loadConfig, parseConfig, type Config } from '../../../src/config/load.js';
import { DEFAULT_LISTEN } from '../../../src/smtp/config.js';

const FIXTURES = resolve(import.meta.dirname, '../../fixtures/config');

function problemsOf(text: string, file: string | null): string[] {
  try {
    parseConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    return e.problems.map((p) => `${p.line ?? '?'}:${p.column ?? '?'}: ${p.path ? `${p.path}: ` : ''}${p.message}`);
  }
  return [];
}

describe('bad config fixtures', () => {
  const dir = join(FIXTURES, 'bad');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
  it('there are fixtures to run', () => assert.ok(files.length >= 20, `only ${files.length} fixtures`));
  for (const f of files) {
    it(f, () => {
      const text = readFileSync(join(dir, f), 'utf8');
      const expected = [...text.matchAll(/^# expect: (.*)$/gm)].map((m) => m[1]!);
      assert.ok(expected.length > 0, `${f} has no "# expect:" line`);
      assert.deepEqual(problemsOf(text, join(dir, f)), expected);
    });
  }
});

describe('good config fixtures', () => {
  const dir = join(FIXTURES, 'good');
  const load = (f: string) => parseConfig(readFileSync(join(dir, f), 'utf8'), join(dir, f));
  const cases: Record<string, (c: Config) => void> = {
    'contract.yaml': (c) => {
      assert.equal(c.hostname, 'mx.example.test');
      assert.deepEqual(c.listen.smtp, { host: '0.0.0.0', port: 2525 });
      // A listener given without host gets its own default host.
      assert.deepEqual(c.listen.imap, { host: '0.0.0.0', port: 2143 });
      assert.deepEqual(c.routes['corp.example'], { nexthop: 'smtp://10.0.0.5:25', mode: 'queue', verify: 'none' });
      assert.deepEqual(c.routes['shop.example'], { nexthop: 'smtp://10.0.0.6:25', mode: 'queue', verify: 'callout' });
      assert.deepEqual(c.outbound.retry, [300_000, 600_000, 1_200_000, 2_400_000, 3_600_000]);
      assert.equal(c.outbound.lifetime, 5 * 86_400_000);
      assert.equal(c.sieve.vacation.default_period, 7 * 86_400_000);
      assert.equal(c.plugins.length, 5);
      assert.deepEqual(c.plugins[1], { dnsbl: { zones: ['zen.example'] } });
      assert.equal(c.api.tokens[0]?.scope, 'write');
    },
    'minimal.yaml': (c) => {
      // Domains are lower-cased and lose a trailing dot.
      assert.deepEqual(c.domains.local, ['example.test']);
      assert.deepEqual(Object.keys(c.listen), ['smtp']);
      assert.deepEqual(c.listen.smtp, { host: '0.0.0.0', port: 25 });
      assert.deepEqual(c.plugins, ['auth', 'relay-acl']);
      assert.deepEqual(c.store, { driver: 'embedded' });
    },
    'empty.yaml': (c) => {
      // A file lists the listeners it wants; an empty one wants none, and names no local domain.
      assert.deepEqual(c.listen, {});
      assert.deepEqual(c.domains.local, []);
      assert.equal(c.data_dir, join(dir, 'data'));
    },
    'comments-only.yaml': (c) => assert.deepEqual(c.listen, {}),
    'paths.yaml': (c) => {
      assert.equal(c.data_dir, join(dir, 'var/postern'));
      assert.equal(c.tls?.cert, resolve(dir, '../certs/mx.crt'));
      assert.equal(c.tls?.key, '/etc/ssl/private/mx.key');
      assert.equal(c.mailbox.path, join(dir, 'mail/{local}'));
      // Plugin paths stay as written (error key paths name them so); the plugin host resolves
      // them against baseDir.
      assert.deepEqual(c.plugins, ['relay-acl', './local-plugin.js', { '../shared/other.js': { level: 2 } }]);
      assert.equal(c.baseDir, dir);
      assert.equal(c.configFile, join(dir, 'paths.yaml'));
    },
    'units.yaml': (c) => {
      assert.equal(c.smtp.max_message_size, 10 * 1024 * 1024);
      assert.equal(c.smtp.idle_timeout, 90_000);
      assert.equal(c.smtp.greeting_delay, 1500);
      assert.equal(c.dns.timeout, 2500);
      assert.deepEqual(c.outbound.retry, [30_000, 5_400_000, 86_400_000]);
      assert.equal(c.outbound.lifetime, 7 * 86_400_000);
      assert.equal(c.outbound.delay_warning, 4 * 3_600_000);
      assert.deepEqual(c.store, { driver: 'redis', url: 'redis://127.0.0.1:6379/2', prefix: 'postern:' });
    },
  };
  it('every good fixture has its assertions', () => {
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort(), Object.keys(cases).sort());
  });
  for (const [f, check] of Object.entries(cases)) it(f, () => check(load(f)));
});

describe('no config file: the embedded defaults', () => {
  const c = fromObject({}, null);
  it('turns every listener on, on its unprivileged default port', () => {
    assert.deepEqual(c.listen, DEFAULT_LISTEN);
    // The ports CONTRACT.md promises for `npm start`.
    assert.deepEqual(
      Object.fromEntries(Object.entries(c.listen).map(([k, v]) => [k, v.port])),
      { smtp: 2525, submission: 2587, smtps: 2465, lmtp: 2424, imap: 2143, imaps: 2993, pop3: 2110, pop3s: 2995, managesieve: 4190, api: 8025 },
    );
    for (const l of Object.values(c.listen)) assert.ok(l.port >= 1024, `port ${l.port} needs root`);
  });
  it('delivers mail for localhost', () => assert.deepEqual(c.domains.local, ['localhost']));
  it('keeps data under ./data of the working directory', () => assert.equal(c.data_dir, resolve('data')));
  it('uses the embedded store, no TLS files, the default chain', () => {
    assert.deepEqual(c.store, { driver: 'embedded' });
    assert.equal(c.tls, undefined);
    assert.deepEqual(c.plugins, ['auth', 'relay-acl']);
    assert.equal(c.configFile, null);
    assert.ok(c.hostname.length > 0);
  });
  it('does not share the default listener objects between loads', () => {
    const a = fromObject({}, null);
    a.listen.smtp!.port = 1;
    assert.equal(fromObject({}, null).listen.smtp?.port, DEFAULT_LISTEN.smtp.port);
  });
});

describe('config lookup order', () => {
  const dir = mkdtempSync(join(tmpdir(), 'postern-config-'));
  const here = process.cwd();
  const inDir = <T>(fn: () => T): T => {
    process.chdir(dir);
    try {
      return fn();
    } finally {
      process.chdir(here);
    }
  };
  const cases: { name: string; explicit?: string; env?: string; local: boolean; want: string | null }[] = [
    { name: '--config wins over everything', explicit: 'a.yaml', env: 'b.yaml', local: true, want: 'a.yaml' },
    { name: '$POSTERN_CONFIG next', env: 'b.yaml', local: true, want: 'b.yaml' },
    { name: './postern.yaml when present', local: true, want: 'postern.yaml' },
    { name: 'else no file (defaults)', local: false, want: null },
  ];
  for (const c of cases) {
    it(c.name, () => {
      rmSync(join(dir, 'postern.yaml'), { force: true });
      if (c.local) writeFileSync(join(dir, 'postern.yaml'), 'hostname: local.example.test\n');
      const found = inDir(() => findConfigFile(c.explicit, c.env ? { POSTERN_CONFIG: c.env } : {}));
      // process.cwd() may be a symlinked temp dir: compare against the real path chdir gave us.
      assert.equal(found, c.want === null ? null : inDir(() => resolve(c.want!)));
    });
  }
  it('loads ./postern.yaml with its relative paths against its own folder', () => {
    writeFileSync(join(dir, 'postern.yaml'), 'hostname: local.example.test\ndata_dir: spool\n');
    const c = inDir(() => loadConfig(undefined, {}));
    assert.equal(c.hostname, 'local.example.test');
    assert.equal(c.data_dir, inDir(() => resolve('spool')));
  });
  it('a missing --config file is an error, not the defaults', () => {
    assert.throws(
      () => loadConfig(join(dir, 'nope.yaml'), {}),
      (e: unknown) => e instanceof ConfigError && /cannot read the config file: no such file/.test(e.message),
    );
  });
  it('a folder given as --config is an error', () => {
    assert.throws(() => loadConfig(dir, {}), (e: unknown) => e instanceof ConfigError && /is a directory/.test(e.message));
  });
  it('cleans up', () => rmSync(dir, { recursive: true, force: true }));
});

describe('YAML edge cases', () => {
  it('an alias bomb is refused rather than expanded', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', 'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]', 'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]', 'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]'].join('\n');
    const problems = problemsOf(bomb, null);
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /YAML: .*alias/i);
  });
  it('anchors and aliases used sensibly work', () => {
    const c = parseConfig('listen:\n  smtp: &l { host: 127.0.0.1, port: 0 }\n  lmtp: *l\n', null);
    assert.deepEqual(c.listen.lmtp, { host: '127.0.0.1', port: 0 });
  });
  it('reports every syntax error with its position', () => {
    const problems = problemsOf('a: 1\na: 2\nb: 1\nb: 2\n', 'x.yaml');
    assert.deepEqual(problems, ['2:1: YAML: duplicate key "a"', '4:1: YAML: duplicate key "b"']);
  });
  it('names a file in the message as given', () => {
    assert.throws(
      () => parseConfig('foo: 1\n', resolve('some/dir/postern.yaml')),
      (e: unknown) => e instanceof ConfigError && e.message === 'some/dir/postern.yaml:1:1: foo: unknown key',
    );
  });
});
