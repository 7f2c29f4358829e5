// Keys prepared once (match.ts prepareKeys: folded, compiled) must match exactly as comparing each
// value with each key afresh (matchOne), for every comparator and match type; the regex engine's
// quick checks (anchored patterns, literal prefixes) must not change an answer either.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_LIMITS } from '../../../src/sieve/limits.js';
import { asciiLower, matchOne, matchValues, prepareKeys, type Comparator, type MatchSpec } from '../../../src/sieve/match.js';
import { compileGlob, compileRegex, execProgram } from '../../../src/sieve/regex.js';

const VALUES = ['', 'Joe@Example.COM', 'joe@example.com', 'BULK12-news', 'bulk12-', 'x bulk12-y', '00042', '42', 'straße', 'ÄBC', 'a'.repeat(2000) + 'B', 'Subject: Win-1 offer'];
const KEYS = ['', 'joe@example.com', 'JOE@EXAMPLE.COM', 'bulk12-*', '*bulk12-*', 'bulk?2-*', '42', 'win-1', 'STRASSE', 'äbc', '*B', '\\*'];
const REGEXES = ['^bulk[0-9]+-', 'example\\.com$', '^$', 'b$', '(a|b)+', '^Joe'];
const COMPARATORS: Comparator[] = ['i;octet', 'i;ascii-casemap', 'i;ascii-numeric'];

function reference(spec: MatchSpec, values: string[], keys: string[]): boolean {
  for (const v of values) for (const k of keys) if (matchOne(spec, v, k, DEFAULT_LIMITS) !== false) return true;
  return false;
}

describe('prepared keys match as unprepared ones', () => {
  for (const comparator of COMPARATORS) {
    for (const type of ['is', 'contains', 'matches', 'regex', 'value'] as const) {
      if (comparator === 'i;ascii-numeric' && (type === 'contains' || type === 'matches' || type === 'regex')) continue;
      it(`${type} with ${comparator}`, () => {
        const spec: MatchSpec = { type, comparator, ...(type === 'value' ? { rel: 'ge' as const } : {}) };
        const keys = type === 'regex' ? REGEXES : KEYS;
        const prepared = prepareKeys(spec, keys, DEFAULT_LIMITS);
        for (const v of VALUES) {
          for (const k of keys) {
            const one = prepareKeys(spec, [k], DEFAULT_LIMITS);
            assert.equal(matchValues(spec, [v], [k], DEFAULT_LIMITS, undefined, one), reference(spec, [v], [k]), `${JSON.stringify(v)} vs ${JSON.stringify(k)}`);
          }
          assert.equal(matchValues(spec, [v], keys, DEFAULT_LIMITS, undefined, prepared), reference(spec, [v], keys), JSON.stringify(v));
        }
      });
    }
  }
  it('prepared keys for other keys are not used', () => {
    const spec: MatchSpec = { type: 'is', comparator: 'i;ascii-casemap' };
    const stale = prepareKeys(spec, ['a'], DEFAULT_LIMITS);
    assert.equal(matchValues(spec, ['b'], ['b'], DEFAULT_LIMITS, undefined, stale), true);
  });
  it('asciiLower folds only ASCII, long values too', () => {
    assert.equal(asciiLower('ÄBc'), 'Äbc');
    const long = 'X'.repeat(3000) + 'Ä';
    assert.equal(asciiLower(long), 'x'.repeat(3000) + 'Ä');
    assert.equal(asciiLower(long), 'x'.repeat(3000) + 'Ä');
    assert.equal(asciiLower('plain'), 'plain');
  });
  it('anchored patterns with a literal start: captures as before', () => {
    const g = compileGlob('bulk*-*', { caseInsensitive: true, maxProgram: 4096 });
    assert.deepEqual(execProgram(g, 'BULK12-news'), ['BULK12-news', '12', 'news']);
    assert.equal(execProgram(g, 'xbulk12-news'), null);
    const r = compileRegex('^Re: (.*)', { caseInsensitive: false, maxLength: 1024, maxProgram: 4096 });
    assert.deepEqual(execProgram(r, 'Re: hello'), ['Re: hello', 'hello']);
    assert.equal(execProgram(r, 're: hello'), null);
    assert.equal(execProgram(r, 'Re'), null);
    // "^a|b" is not anchored as a whole: "b" may match anywhere.
    assert.deepEqual(execProgram(compileRegex('^a|b', { caseInsensitive: false, maxLength: 1024, maxProgram: 4096 }), 'xxb'), ['b']);
  });
});
