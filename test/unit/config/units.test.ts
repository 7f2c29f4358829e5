// Durations and sizes (src/config/units.ts): the spellings config accepts, and the ones it refuses.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { duration, parseDuration, parseSize, size } from '../../../src/config/units.js';
import { configErrorMap } from '../../../src/config/errors.js';

describe('parseDuration', () => {
  const cases: [string, number | undefined][] = [
    ['250ms', 250],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5h', 5_400_000],
    ['1d', 86_400_000],
    ['2w', 1_209_600_000],
    ['4H', 14_400_000],
    [' 10 m ', 600_000],
    ['0s', 0],
    ['5', undefined], // a bare number string is ambiguous: seconds? minutes? refuse it
    ['', undefined],
    ['5x', undefined],
    ['-5m', undefined],
    ['5 minutes', undefined],
    ['1h30m', undefined],
    ['.5h', undefined],
  ];
  for (const [input, want] of cases) it(JSON.stringify(input), () => assert.equal(parseDuration(input), want));
});

describe('parseSize', () => {
  const cases: [string, number | undefined][] = [
    ['100', 100],
    ['100b', 100],
    ['512K', 512 * 1024],
    ['512kb', 512 * 1024],
    ['25M', 25 * 1024 * 1024],
    ['25MB', 25 * 1024 * 1024],
    ['1g', 1024 ** 3],
    [' 10 M ', 10 * 1024 * 1024],
    ['', undefined],
    ['1.5M', undefined],
    ['10Q', undefined],
    ['-1K', undefined],
    ['10 megabytes', undefined],
  ];
  for (const [input, want] of cases) it(JSON.stringify(input), () => assert.equal(parseSize(input), want));
});

describe('duration() and size() in a schema', () => {
  const schema = z.object({ d: duration().optional(), s: size().optional(), r: duration() }).strict();
  const messages = (raw: unknown) => {
    const r = schema.safeParse(raw, { error: configErrorMap });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  const cases: [unknown, string[]][] = [
    [{ r: '1m' }, []],
    [{ r: 60_000, d: 0, s: 0 }, []],
    [{ r: '1m', d: 1.5 }, ['d: expected a duration such as 30s, 5m, 1h or 1d, got 1.5']],
    [{ r: '1m', d: -1 }, ['d: expected a duration such as 30s, 5m, 1h or 1d, got -1']],
    [{ r: '1m', d: '5' }, ['d: expected a duration such as 30s, 5m, 1h or 1d, got "5"']],
    [{ r: '1m', d: [] }, ['d: expected a duration such as 30s, 5m, 1h or 1d, received list']],
    [{ r: '1m', s: '1.5M' }, ['s: expected a size such as 512K, 25M or a number of bytes, got "1.5M"']],
    [{ r: '1m', s: false }, ['s: expected a size such as 512K, 25M or a number of bytes, received boolean']],
    [{}, ['r: required']],
  ];
  for (const [raw, want] of cases) it(JSON.stringify(raw), () => assert.deepEqual(messages(raw), want));
  it('parses to numbers', () => {
    assert.deepEqual(schema.parse({ r: '2m', d: '1d', s: '1K' }), { r: 120_000, d: 86_400_000, s: 1024 });
  });
  it('a string default (prefault) goes through the parser', () => {
    assert.equal(duration().prefault('5s').parse(undefined), 5000);
  });
});
