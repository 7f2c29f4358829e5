// Problem formatting (src/config/errors.ts) and key suggestions (src/config/suggest.ts).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { configErrorMap, formatIssues, formatPath, formatProblem, parsePath, sortProblems, type ConfigProblem } from '../../../src/config/errors.js';
import { configSchema } from '../../../src/config/schema.js';
import { suggestKey } from '../../../src/config/suggest.js';

describe('formatProblem', () => {
  const cases: [ConfigProblem, string | null, string][] = [
    [{ path: 'listen.smtp.port', message: 'expected number, received string', line: 3, column: 5 }, 'postern.yaml', 'postern.yaml:3:5: listen.smtp.port: expected number, received string'],
    [{ path: 'listen.smtp.port', message: 'm' }, 'postern.yaml', 'postern.yaml: listen.smtp.port: m'],
    [{ path: '', message: 'YAML: duplicate key "a"', line: 2, column: 1 }, 'p.yaml', 'p.yaml:2:1: YAML: duplicate key "a"'],
    [{ path: 'a.b', message: 'm', line: 1, column: 2 }, null, 'line 1, column 2: a.b: m'],
    [{ path: 'a.b', message: 'm' }, null, 'a.b: m'],
    [{ path: '', message: 'm' }, null, 'm'],
  ];
  for (const [p, file, want] of cases) it(want, () => assert.equal(formatProblem(p, file), want));
});

describe('key paths', () => {
  const cases: [PropertyKey[], string][] = [
    [['listen', 'smtp', 'port'], 'listen.smtp.port'],
    [['plugins', 0, 'dnsbl'], 'plugins.0.dnsbl'],
    [['routes', 'corp.example', 'mode'], 'routes."corp.example".mode'],
    [['routes', 'a "b"'], 'routes."a \\"b\\""'],
    [['x', ''], 'x.""'],
  ];
  for (const [path, dotted] of cases) {
    it(dotted, () => {
      assert.equal(formatPath(path), dotted);
      assert.deepEqual(parsePath(dotted), path);
    });
  }
});

describe('configErrorMap', () => {
  const msg = (schema: z.ZodType, v: unknown) => {
    const r = schema.safeParse(v, { error: configErrorMap });
    assert.ok(!r.success, 'should fail');
    return r.error.issues[0]!.message;
  };
  const cases: [string, z.ZodType, unknown, string][] = [
    ['missing', z.object({ a: z.string() }), {}, 'required'],
    ['type', z.number(), 'x', 'expected number, received string'],
    ['object → map', z.object({}), [], 'expected map, received list'],
    ['record → map', z.record(z.string(), z.number()), 5, 'expected map, received number'],
    ['array → list', z.array(z.string()), {}, 'expected list, received map'],
    ['int', z.number().int(), 1.25, 'expected integer, received 1.25'],
    ['empty string', z.string().min(1), '', 'must not be empty'],
    ['short string', z.string().min(16), 'abc', 'must be at least 16 characters long'],
    ['long string', z.string().max(2), 'abc', 'must be at most 2 characters long'],
    ['empty list', z.array(z.string()).min(1), [], 'must not be empty'],
    ['long list', z.array(z.string()).max(1), ['a', 'b'], 'must have at most 1 entries'],
    ['min', z.number().min(1000), 80, 'must be >= 1000'],
    ['positive', z.number().positive(), 0, 'must be > 0'],
    ['max', z.number().max(65535), 70000, 'must be <= 65535'],
    ['enum', z.enum(['a', 'b']), 'c', 'expected one of "a", "b", received "c"'],
    ['literal', z.literal('a'), 'c', 'expected "a", received "c"'],
    ['own message wins', z.string().regex(/^x/, 'must start with x'), 'y', 'must start with x'],
    ['regex without a message', z.string().regex(/^x/), 'y', 'does not match /^x/'],
  ];
  for (const [name, schema, v, want] of cases) it(name, () => assert.equal(msg(schema, v), want));
});

describe('formatIssues on unions', () => {
  const route = z.union([z.string(), z.object({ nexthop: z.string(), mode: z.enum(['queue', 'proxy']) }).strict()]);
  const run = (v: unknown) => {
    const r = route.safeParse(v, { error: configErrorMap, reportInput: true });
    assert.ok(!r.success);
    return formatIssues(r.error.issues, ['routes', 'x']).map((p) => `${p.path}: ${p.message}`);
  };
  it('reports the branch that took the shape (the map), not the string branch', () => {
    assert.deepEqual(run({ nexthop: 'smtp://h', mode: 'bogus' }), ['routes.x.mode: expected one of "queue", "proxy", received "bogus"']);
  });
  it('an unknown key inside the map branch', () => {
    assert.deepEqual(run({ nexthop: 'smtp://h', mode: 'queue', extra: 1 }), ['routes.x.extra: unknown key']);
  });
  it('names every accepted type when no branch took the shape', () => {
    assert.deepEqual(run(5), ['routes.x: expected string or map, received number']);
  });
});

describe('sortProblems', () => {
  it('puts problems in file order, unlocated last, stable', () => {
    const ps: ConfigProblem[] = [
      { path: 'c', message: '', line: 9, column: 1 },
      { path: 'x', message: '' },
      { path: 'a', message: '', line: 2, column: 5 },
      { path: 'b', message: '', line: 2, column: 3 },
      { path: 'y', message: '' },
    ];
    assert.deepEqual(sortProblems(ps).map((p) => p.path), ['b', 'a', 'c', 'x', 'y']);
  });
});

describe('suggestKey', () => {
  const cases: [string[], string, string | undefined][] = [
    [[], 'listne', 'listen'],
    [[], 'data-dir', 'data_dir'],
    [[], 'plugin', 'plugins'],
    [['listen', 'smtp'], 'prot', 'port'],
    [['outbound'], 'concurency', 'concurrency'],
    [['outbound', 'concurrency'], 'perdomain', 'per_domain'],
    [['store'], 'ulr', 'url'],
    [['routes', 'corp.example'], 'mod', 'mode'],
    [['sieve', 'vacation'], 'min-period', 'min_period'],
    [[], 'zzz', undefined],
    [['listen'], 'ftp', undefined],
  ];
  for (const [path, key, want] of cases) it(`${[...path, key].join('.')} → ${want}`, () => assert.equal(suggestKey(configSchema, path, key), want));
});
