// The composed schema (src/config/schema.ts): strict at every level, so a misspelt key anywhere
// is an error naming its full path; defaults are the embedded single-node mode.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../../src/config/errors.js';
import { fromObject } from '../../../src/config/load.js';
import { configSchema } from '../../../src/config/schema.js';

function problems(raw: unknown): string[] {
  try {
    fromObject(raw, null);
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.problems.map((p) => `${p.path}: ${p.message}`);
  }
  return [];
}

/** Sets `value` at `path` inside a fresh object. */
function at(path: string[], value: unknown): Record<string, unknown> {
  return path.reduceRight<unknown>((v, k) => ({ [k]: v }), value) as Record<string, unknown>;
}

describe('every object in the schema refuses unknown keys', () => {
  // [path of the object, a valid base value for it (when it has required keys)]
  const objects: [string[], Record<string, unknown>][] = [
    [[], {}],
    [['listen'], {}],
    ...(['smtp', 'submission', 'smtps', 'lmtp', 'imap', 'imaps', 'pop3', 'pop3s', 'managesieve', 'api'].map((l) => [['listen', l], {}]) as [string[], Record<string, unknown>][]),
    [['tls'], { cert: 'c', key: 'k' }],
    [['smtp'], {}],
    [['domains'], {}],
    [['relay'], {}],
    [['mailbox'], {}],
    [['dns'], {}],
    [['outbound'], {}],
    [['outbound', 'concurrency'], {}],
    [['store'], { driver: 'embedded' }],
    [['store'], { driver: 'redis' }],
    [['api'], {}],
    [['sieve'], {}],
    [['sieve', 'vacation'], {}],
    [['sieve', 'spamtest'], {}],
    [['sieve', 'virustest'], {}],
    [['sieve', 'limits'], {}],
    [['log'], {}],
    [['routes', 'corp.example'], { nexthop: 'smtp://10.0.0.5:25' }],
  ];
  for (const [path, base] of objects) {
    const where = path.length ? path.join('.') : '(top level)';
    it(`${where}${base.driver ? ` (driver ${String(base.driver)})` : ''}`, () => {
      const shown = path.map((k) => (k.includes('.') ? JSON.stringify(k) : k));
      assert.deepEqual(problems(path.length ? at(path, { ...base }) : {}), [], 'the base value is valid');
      const raw = path.length ? at(path, { ...base, bogus_key: 1 }) : { bogus_key: 1 };
      assert.deepEqual(problems(raw), [`${[...shown, 'bogus_key'].join('.')}: unknown key`]);
    });
  }
  it('an api token entry', () => {
    assert.deepEqual(problems({ api: { tokens: [{ token: 'x'.repeat(16), extra: 1 }] } }), ['api.tokens.0.extra: unknown key']);
  });
});

describe('defaults', () => {
  const d = configSchema.parse({});
  const cases: [string, unknown, unknown][] = [
    ['data_dir', d.data_dir, './data'],
    ['smtp.max_message_size', d.smtp.max_message_size, 25 * 1024 * 1024],
    ['smtp.bare_newline', d.smtp.bare_newline, 'reject'],
    ['smtp.idle_timeout', d.smtp.idle_timeout, 300_000],
    ['relay.networks', d.relay.networks, ['127.0.0.0/8', '::1/128']],
    ['mailbox', d.mailbox, { format: 'maildir', path: '{data_dir}/mail/{domain}/{local}', folder_names: 'utf7' }],
    ['dns', d.dns, { servers: [], timeout: 5000, tries: 2 }],
    ['outbound.retry', d.outbound.retry, [300_000, 600_000, 1_200_000, 2_400_000, 3_600_000]],
    ['outbound.lifetime', d.outbound.lifetime, 5 * 86_400_000],
    ['outbound.tls', d.outbound.tls, 'opportunistic'],
    ['store', d.store, { driver: 'embedded' }],
    ['api.tokens', d.api.tokens, []],
    ['sieve.vacation', d.sieve.vacation, { min_period: 86_400_000, default_period: 604_800_000 }],
    ['log.level', d.log.level, 'info'],
    ['routes', d.routes, {}],
    ['plugins', d.plugins, ['auth', 'relay-acl']],
  ];
  for (const [name, got, want] of cases) it(name, () => assert.deepEqual(got, want));
  it('a listener given with only a port gets its default host', () => {
    const c = configSchema.parse({ listen: { lmtp: { port: 0 }, smtp: {} } });
    assert.deepEqual(c.listen, { lmtp: { host: '127.0.0.1', port: 0 }, smtp: { host: '0.0.0.0', port: 2525 } });
  });
  it('redis store defaults its url and prefix', () => {
    assert.deepEqual(configSchema.parse({ store: { driver: 'redis' } }).store, { driver: 'redis', url: 'redis://127.0.0.1:6379/0', prefix: 'postern:' });
  });
});

describe('wrong types name the key and both types', () => {
  const cases: [unknown, string][] = [
    [{ listen: { smtp: { port: '25' } } }, 'listen.smtp.port: expected number, received string'],
    [{ listen: { smtp: { port: 25.5 } } }, 'listen.smtp.port: expected integer, received 25.5'],
    [{ listen: { smtp: { port: -1 } } }, 'listen.smtp.port: must be >= 0'],
    [{ relay: { networks: '10.0.0.0/8' } }, 'relay.networks: expected list, received string'],
    [{ relay: { networks: [null] } }, 'relay.networks.0: expected string, received null'],
    [{ outbound: { concurrency: 5 } }, 'outbound.concurrency: expected map, received number'],
    [{ outbound: { tls: 'always' } }, 'outbound.tls: expected one of "none", "opportunistic", "required", "verify", received "always"'],
    [{ smtp: { bare_newline: true } }, 'smtp.bare_newline: expected one of "reject", "normalize", received true'],
    [{ sieve: { virustest: { values: { clean: 9 } } } }, 'sieve.virustest.values.clean: must be <= 5'],
    [{ sieve: { extensions: ['fileinto', 'telepathy'] } }, "sieve.extensions.1: unknown Sieve extension 'telepathy'"],
    [{ tls: {} }, 'tls.cert: required'],
    [{ store: { driver: 'redis', url: 5 } }, 'store.url: expected string, received number'],
    [{ plugins: 'relay-acl' }, 'plugins: expected list, received string'],
    [[], 'expected map, received list'],
    [null, 'expected map, received null'],
  ];
  for (const [raw, want] of cases) {
    it(want, () => assert.ok(problems(raw).some((p) => p === want || p === `: ${want}`), `got ${JSON.stringify(problems(raw))}`));
  }
});
