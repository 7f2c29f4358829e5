// Regex engine, comparators, message parsing, editheader results, include, vacation
// suppression and hostile scripts (bounded time, no crash).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compile } from '../../../src/sieve/compile.js';
import { shouldSuppressVacation } from '../../../src/sieve/extensions/vacation.js';
import { run } from '../../../src/sieve/interpret.js';
import { compare, matchValues } from '../../../src/sieve/match.js';
import { DEFAULT_LIMITS } from '../../../src/sieve/limits.js';
import { decodeMimeWords, parseAddressList } from '../../../src/sieve/message.js';
import { compileRegex, execProgram, RegexError } from '../../../src/sieve/regex.js';
import { BASIC, ENVELOPE, msg, mustCompile, runScript, summary } from './harness.js';

const RX = { caseInsensitive: false, maxLength: 1024, maxProgram: 4096 };

describe('regex engine (linear time)', () => {
  const cases: [string, string, string[] | null][] = [
    ['a(b+)c', 'xxabbbcx', ['abbbc', 'bbb']],
    ['^a', 'ba', null],
    ['a$', 'ba', ['a']],
    ['(a|ab)(c|bcd)', 'abcd', ['abcd', 'a', 'bcd']],
    ['x*', '', ['']],
    ['[[:digit:]]{2,3}', 'ab12345', ['123']],
    ['[^a-c]+', 'abcdef', ['def']],
    ['a.c', 'a\nc', ['a\nc']],
    ['colou?r', 'color', ['color']],
    ['(?:ab)+', 'ababab', ['ababab']],
  ];
  for (const [re, s, want] of cases) {
    it(`/${re}/ on ${JSON.stringify(s)}`, () => assert.deepEqual(execProgram(compileRegex(re, RX), s), want));
  }
  for (const bad of ['(a', 'a)', '\\1', '*a', 'a{3,2}', '[abc', '[[:foo:]]', 'a{1000}']) {
    it(`rejects ${bad}`, () => assert.throws(() => compileRegex(bad, RX), RegexError));
  }
  it('pathological patterns run in bounded time', () => {
    const t = Date.now();
    assert.equal(execProgram(compileRegex('(a*)*b', RX), 'a'.repeat(20000)), null);
    assert.equal(execProgram(compileRegex('(a|a)*c', RX), 'a'.repeat(20000)), null);
    assert.equal(execProgram(compileRegex('.*a.*a.*a.*b', RX), 'a'.repeat(20000)), null);
    assert.ok(Date.now() - t < 3000, `took ${Date.now() - t} ms`);
  });
});

describe('comparators (RFC 4790 §9)', () => {
  const L = DEFAULT_LIMITS;
  it('i;octet equality is exact', () => assert.notEqual(compare('i;octet', 'A', 'a'), 0));
  it('i;ascii-casemap folds ASCII only', () => {
    assert.equal(compare('i;ascii-casemap', 'ABC', 'abc'), 0);
    assert.notEqual(compare('i;ascii-casemap', 'Ä', 'ä'), 0);
  });
  it('i;ascii-numeric compares numbers, big ones too', () => {
    assert.equal(compare('i;ascii-numeric', '007', '7'), 0);
    assert.equal(compare('i;ascii-numeric', '10', '9'), 1);
    assert.equal(compare('i;ascii-numeric', '123456789012345678901234567890', '123456789012345678901234567891'), -1);
    assert.equal(compare('i;ascii-numeric', 'abc', '99999'), 1, 'no digits is positive infinity');
    assert.equal(compare('i;ascii-numeric', 'abc', 'xyz'), 0);
  });
  it(':matches on the empty string', () => {
    assert.equal(matchValues({ type: 'matches', comparator: 'i;octet' }, [''], ['*'], L), true);
    assert.equal(matchValues({ type: 'matches', comparator: 'i;octet' }, [''], ['?'], L), false);
  });
  it(':count counts values', () => assert.equal(matchValues({ type: 'count', rel: 'eq', comparator: 'i;ascii-numeric' }, ['a', 'b'], ['2'], L), true));
});

describe('message parsing', () => {
  it('RFC 2047 Q and B words, adjacent words joined', () => {
    assert.equal(decodeMimeWords('=?UTF-8?Q?a_b?= =?UTF-8?B?w6Q=?='), 'a bä');
    assert.equal(decodeMimeWords('plain =?bogus'), 'plain =?bogus');
  });
  it('address list with group, quoted comma and comment', () => {
    const a = parseAddressList('G: a@x.example, "B, C" <b@x.example>;, c@x.example (note), <d@x.example>');
    assert.deepEqual(a.map((x) => x.address), ['a@x.example', 'b@x.example', 'c@x.example', 'd@x.example']);
  });
  it('quoted local part is unquoted', () => assert.equal(parseAddressList('"john doe"@example.com')[0]!.address, 'john doe@example.com'));
});

describe('editheader results (RFC 5293)', () => {
  it('stored copies carry headers as of each action, implicit keep last', async () => {
    const r = await runScript('require ["editheader", "fileinto", "copy"];\nfileinto :copy "A";\naddheader "X-Tag" "1";\ndeleteheader "Subject";');
    assert.equal(summary(r), 'fileinto:A:copy implicit');
    assert.equal(r.stored?.length, 2);
    assert.equal(r.stored![0]!.mailbox, 'A');
    assert.ok(r.stored![0]!.headers.some(([k]) => k === 'Subject'));
    assert.equal(r.stored![1]!.mailbox, 'INBOX');
    assert.deepEqual(r.stored![1]!.headers[0], ['X-Tag', '1']);
    assert.ok(!r.stored![1]!.headers.some(([k]) => k === 'Subject'));
  });
  it('addheader :last and non-ASCII encoding', async () => {
    const r = await runScript('require "editheader";\naddheader :last "X-Note" "Grüße";');
    const last = r.stored![0]!.headers.at(-1)!;
    assert.equal(last[0], 'X-Note');
    assert.match(last[1], /^=\?UTF-8\?B\?/);
  });
  it('deleteheader with a value pattern and :index', async () => {
    const r = await runScript('require "editheader";\ndeleteheader :index 1 :last "Message-ID";', BASIC);
    assert.ok(!r.stored![0]!.headers.some(([k]) => k === 'Message-ID'));
    const p = await runScript('require ["editheader", "variables"];\nset "h" "received";\ndeleteheader "${h}";', BASIC);
    assert.equal(p.stored, undefined, 'Received is protected; nothing edited');
    const r2 = await runScript('require "editheader";\ndeleteheader :contains "X-Spam-Score" "7";');
    assert.ok(!r2.stored![0]!.headers.some(([k]) => k === 'X-Spam-Score'));
  });
  it('no stored field when nothing was edited', async () => assert.equal((await runScript('keep;')).stored, undefined));
});

describe('include (RFC 6609)', () => {
  const scripts: Record<string, string> = {
    spam: 'require "fileinto"; if header :contains "subject" "acme" { fileinto "Lists"; }',
    loop: 'require "include"; include "loop";',
    globals: 'require ["include", "variables", "fileinto"]; global "box"; fileinto "${box}";',
    ret: 'require ["include", "fileinto"]; return; fileinto "never";',
  };
  const host = { include: (name: string) => scripts[name] };
  const go = (text: string) => run(mustCompile(text), BASIC, ENVELOPE, host);
  it('runs the included script with shared actions', async () => assert.equal(summary(await go('require "include"; include "spam";')), 'fileinto:Lists'));
  it('global variables are shared', async () => assert.equal(summary(await go('require ["include", "variables"]; global "box"; set "box" "G"; include "globals";')), 'fileinto:G'));
  it('return ends only the included script', async () => assert.equal(summary(await go('require ["include", "fileinto"]; include "ret"; fileinto "after";')), 'fileinto:after'));
  it('an include loop is a runtime error', async () => assert.equal(summary(await go('require "include"; include "loop";')), 'ERROR implicit'));
  it('missing script: error, or nothing with :optional', async () => {
    assert.equal(summary(await go('require "include"; include "nope";')), 'ERROR implicit');
    assert.equal(summary(await go('require "include"; include :optional "nope";')), 'implicit');
  });
  it(':once includes a script once', async () => assert.equal(summary(await go('require "include"; include :once "spam"; include :once "spam";')), 'fileinto:Lists'));
});

describe('duplicate (RFC 7352) with a host memory', () => {
  it('second run with the same Message-ID is a duplicate', async () => {
    const seen = new Set<string>();
    const host = { duplicate: ({ id }: { id: string }) => (seen.has(id) ? true : (seen.add(id), false)) };
    const s = mustCompile('require "duplicate"; if duplicate { discard; }');
    assert.equal(summary(await run(s, BASIC, ENVELOPE, host)), 'implicit');
    assert.equal(summary(await run(s, BASIC, ENVELOPE, host)), 'discard');
  });
});

describe('vacation action and RFC 3834 suppression', () => {
  it('period: :days, clamped to the configured minimum, default 7 days', async () => {
    const v = async (s: string) => (await runScript(`require ["vacation", "vacation-seconds"]; ${s}`)).actions[0] as { seconds: number; subject?: string };
    assert.equal((await v('vacation :days 3 "x";')).seconds, 259200);
    assert.equal((await v('vacation :seconds 60 "x";')).seconds, 86400);
    assert.equal((await v('vacation "x";')).seconds, 604800);
    assert.equal((await v('vacation "x";')).subject, undefined);
  });
  const base = ['From: joe@example.com', 'To: user@example.org', 'Subject: hi'];
  const env = { from: 'joe@example.com', to: 'user@example.org' };
  const cases: [string, string[], string, string | null][] = [
    ['ordinary mail gets a reply', base, env.from, null],
    ['null sender', base, '', 'null-sender'],
    ['mailer-daemon', base, 'MAILER-DAEMON@example.com', 'system-sender'],
    ['owner- list sender', base, 'owner-list@example.com', 'system-sender'],
    ['Auto-Submitted', [...base, 'Auto-Submitted: auto-replied'], env.from, 'auto-submitted'],
    ['Auto-Submitted: no is fine', [...base, 'Auto-Submitted: no'], env.from, null],
    ['List-Id', [...base, 'List-Id: <l.example.com>'], env.from, 'list'],
    ['Precedence bulk', [...base, 'Precedence: bulk'], env.from, 'bulk'],
    ['not addressed to the user', ['From: joe@example.com', 'To: other@example.org'], env.from, 'not-addressed'],
  ];
  for (const [name, headers, from, want] of cases) {
    it(name, () => assert.equal(shouldSuppressVacation(msg(headers), { from, to: env.to }, ['user@example.org']), want));
  }
});

describe('hostile scripts', () => {
  it('10,000 nested blocks are refused without a crash', () => {
    const t = Date.now();
    const r = compile('if true {'.repeat(10000) + '}'.repeat(10000));
    assert.equal(r.ok, false);
    assert.ok(Date.now() - t < 2000);
  });
  it('10,000 nested parentheses in tests are refused', () => {
    const r = compile('if ' + 'not '.repeat(10) + 'anyof('.repeat(10000) + 'true' + ')'.repeat(10000) + ' { keep; }');
    assert.equal(r.ok, false);
  });
  it('a script over the size limit is refused', () => {
    const r = compile('keep;'.repeat(300000));
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.errors[0]!.message, /too large/);
  });
  it('a huge string literal is refused', () => {
    const r = compile(`require "fileinto"; fileinto "${'x'.repeat(300000)}";`);
    assert.equal(r.ok, false);
  });
  it('variables cannot grow without bound', async () => {
    const body = 'set "a" "${a}${a}${a}${a}";'.repeat(40);
    const r = await runScript(`require ["variables", "fileinto"]; set "a" "xxxxxxxxxx"; ${body} set :length "n" "\${a}"; fileinto "\${n}";`);
    assert.equal(summary(r), 'fileinto:4096');
  });
  it('pathological :regex on a long header finishes quickly', async () => {
    const long = msg([`Subject: ${'a'.repeat(30000)}`]);
    const t = Date.now();
    const r = await runScript('require "regex"; if header :regex "subject" "(a|aa)*(a*)*b" { discard; }', long);
    assert.equal(summary(r), 'implicit');
    assert.ok(Date.now() - t < 5000, `took ${Date.now() - t} ms`);
  });
  it('the step limit stops runaway scripts', async () => {
    const s = mustCompile('if true { keep; }\n'.repeat(200), { limits: { maxSteps: 50 } });
    const r = await run(s, BASIC, ENVELOPE);
    assert.equal(r.status, 'runtime-error');
    assert.match(r.errors[0]!.message, /step limit/);
  });
  it('too many actions is a runtime error', async () => {
    const s = mustCompile('require "fileinto";\n' + Array.from({ length: 40 }, (_, i) => `fileinto "m${i}";`).join('\n'));
    assert.equal((await run(s, BASIC, ENVELOPE)).status, 'runtime-error');
  });
  it('config max_redirects applies', async () => {
    const s = mustCompile('redirect "a@x.example"; redirect "b@x.example";');
    const { sieveSchema } = await import('../../../src/sieve/config.js');
    const r = await run(s, BASIC, ENVELOPE, {}, { config: sieveSchema.parse({ limits: { max_redirects: 1 } }) });
    assert.equal(r.status, 'runtime-error');
    assert.match(r.errors[0]!.message, /too many redirect/);
  });
});
