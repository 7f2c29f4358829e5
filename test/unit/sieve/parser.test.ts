// Grammar (RFC 5228 §2, §8): lexical cases, locations, and the generated-parser drift check.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { GRAMMAR_PATH, generateParserSource, PARSER_PATH } from '../../../src/sieve/build-parser.js';
import type { CommandNode, StringArg, StringListArg } from '../../../src/sieve/ast.js';
import { DEFAULT_LIMITS } from '../../../src/sieve/limits.js';
import { parseScript, scanNesting } from '../../../src/sieve/parse.js';

function parse(text: string) {
  const r = parseScript(text, DEFAULT_LIMITS);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.ast;
}
function firstString(text: string): string {
  const c = parse(text).commands[0]!;
  const a = c.args.find((x) => x.type === 'string') as StringArg;
  return a.value;
}

describe('sieve grammar', () => {
  it('generated parser matches grammar.peggy (drift check)', () => {
    const fresh = generateParserSource(readFileSync(GRAMMAR_PATH, 'utf8'));
    assert.equal(readFileSync(PARSER_PATH, 'utf8'), fresh, 'run: node --import tsx src/sieve/build-parser.ts');
  });

  const strings: [string, string, string][] = [
    ['plain', 'fileinto "abc";', 'abc'],
    ['escaped quote', 'fileinto "a\\"b";', 'a"b'],
    ['escaped backslash', 'fileinto "a\\\\b";', 'a\\b'],
    ['other backslash dropped (§2.4.2)', 'fileinto "a\\qb";', 'aqb'],
    ['empty string', 'fileinto "";', ''],
    ['8-bit UTF-8', 'fileinto "Ärger/日本";', 'Ärger/日本'],
    ['string with newline inside quotes', 'fileinto "a\nb";', 'a\nb'],
    ['multi-line text:', 'vacation text:\nline 1\nline 2\n.\n;', 'line 1\r\nline 2\r\n'],
    ['multi-line dot-unstuffing', 'vacation text:\n..leading dot\n...\n.\n;', '.leading dot\r\n..\r\n'],
    ['multi-line with hash comment after text:', 'vacation text: # comment\nbody\n.\n;', 'body\r\n'],
    ['multi-line CRLF', 'vacation text:\r\nx\r\n.\r\n;', 'x\r\n'],
    ['multi-line empty', 'vacation text:\n.\n;', ''],
  ];
  for (const [name, text, want] of strings) {
    it(`string: ${name}`, () => assert.equal(firstString(text), want));
  }

  const numbers: [string, number][] = [
    ['100', 100],
    ['1K', 1024],
    ['2k', 2048],
    ['3M', 3 * 1024 * 1024],
    ['1G', 1024 ** 3],
    ['0', 0],
  ];
  for (const [t, v] of numbers) {
    it(`number ${t}`, () => {
      const c = parse(`if size :over ${t} { stop; }`).commands[0]!;
      const n = c.tests[0]!.args[1]!;
      assert.equal(n.type === 'number' && n.value, v);
    });
  }

  it('comments of both kinds are skipped', () => {
    const ast = parse('# hash\nkeep; /* bracket\n comment */ discard; # end');
    assert.deepEqual(ast.commands.map((c) => c.name), ['keep', 'discard']);
  });

  it('identifiers and tags are case-insensitive (lower-cased)', () => {
    const c = parse('IF HeAdEr :CONTAINS "Subject" "x" { STOP; }').commands[0]!;
    assert.equal(c.name, 'if');
    assert.equal(c.tests[0]!.name, 'header');
    assert.equal(c.tests[0]!.args[0]!.type === 'tag' && c.tests[0]!.args[0]!.name, 'contains');
  });

  it('string lists, test lists and nested blocks', () => {
    const c = parse('if anyof (header :is "a" ["x", "y"], not exists "b") { if true { keep; } }').commands[0]!;
    assert.equal(c.testList, false);
    const anyof = c.tests[0]!;
    assert.equal(anyof.testList, true);
    assert.equal(anyof.tests.length, 2);
    assert.equal((anyof.tests[0]!.args[2] as StringListArg).items.length, 2);
    assert.equal(c.block![0]!.block![0]!.name, 'keep');
  });

  it('every node carries a location with line and column', () => {
    const c = parse('keep;\n  if true {\n    discard;\n  }').commands[1] as CommandNode;
    assert.deepEqual([c.location.start.line, c.location.start.column], [2, 3]);
    const d = c.block![0]!;
    assert.deepEqual([d.location.start.line, d.location.start.column, d.location.start.offset], [3, 5, 22]);
  });

  it('empty script and whitespace-only script parse', () => {
    assert.equal(parse('').commands.length, 0);
    assert.equal(parse('  \n# only a comment\n').commands.length, 0);
  });

  it('nesting scan ignores braces inside strings, comments and text:', () => {
    assert.equal(scanNesting('"{{{{" # {{{{\n/* {{{ */ text:\n{{{{\n.\n', 2), -1);
    assert.equal(scanNesting('{{{', 2), 2);
  });

  it('a syntax error reports line and column', () => {
    const r = parseScript('keep;\nif true {\n  discard\n}\n', DEFAULT_LIMITS);
    assert.equal(r.ok, false);
    if (!r.ok) assert.deepEqual([r.errors[0]!.line, r.errors[0]!.column], [4, 1]);
  });
});
