// ManageSieve framing and syntax (RFC 5804 §4): lines, literals {n+} and {n}, quoted strings,
// numbers, limits; every input is also fed one byte at a time, so chunk boundaries never matter.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandFramer, literalMarker, type Frame } from '../../../src/managesieve/framing.js';
import { parseCommand, parseContinuation, ParseError, decodeUtf8 } from '../../../src/managesieve/parser.js';
import { encodeString, statusLine } from '../../../src/managesieve/replies.js';

/** Parsed frames, as readable values: tokens or the error reason. */
function run(input: string | Buffer, limits = {}, bytewise = false): unknown[] {
  const f = new CommandFramer(limits);
  const data = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
  const frames: Frame[] = [];
  if (bytewise) for (let i = 0; i < data.length; i++) frames.push(...f.push(data.subarray(i, i + 1)));
  else frames.push(...f.push(data));
  return frames.map((fr) => {
    if (fr.kind === 'error') return `error:${fr.reason}${fr.fatal ? ':fatal' : ''}`;
    try {
      const c = parseCommand(fr.parts);
      return [c.name, ...c.args.map((a) => (a.kind === 'string' ? a.value.toString('utf8') : a.kind === 'number' ? a.value : `atom:${a.value}`))];
    } catch (e) {
      return `parse:${(e as ParseError).message}`;
    }
  });
}

const cases: { name: string; input: string; want: unknown[]; limits?: object }[] = [
  { name: 'bare command', input: 'CAPABILITY\r\n', want: [['CAPABILITY']] },
  { name: 'case-insensitive name, LF only', input: 'logout\n', want: [['LOGOUT']] },
  { name: 'quoted strings and escapes', input: 'RENAMESCRIPT "a\\"b" "c\\\\d"\r\n', want: [['RENAMESCRIPT', 'a"b', 'c\\d']] },
  { name: 'number', input: 'HAVESPACE "x" 4294967295\r\n', want: [['HAVESPACE', 'x', 4294967295]] },
  { name: 'number too large', input: 'HAVESPACE "x" 4294967296\r\n', want: ['parse:Number too large'] },
  { name: 'non-synchronizing literal', input: 'PUTSCRIPT "s" {7+}\r\nkeep;\r\n\r\n', want: [['PUTSCRIPT', 's', 'keep;\r\n']] },
  { name: 'synchronizing literal form', input: 'PUTSCRIPT "s" {5}\r\nkeep;\r\n', want: [['PUTSCRIPT', 's', 'keep;']] },
  { name: 'two literals on one command', input: 'RENAMESCRIPT {1+}\r\na {2+}\r\nbc\r\n', want: [['RENAMESCRIPT', 'a', 'bc']] },
  { name: 'empty literal', input: 'CHECKSCRIPT {0+}\r\n\r\n', want: [['CHECKSCRIPT', '']] },
  { name: 'literal holding CRLF and a fake command', input: 'CHECKSCRIPT {12+}\r\nLOGOUT\r\nNOOP\r\nNOOP\r\n', want: [['CHECKSCRIPT', 'LOGOUT\r\nNOOP'], ['NOOP']] },
  { name: 'marker inside a quoted string is text', input: 'NOOP "x {3+}"\r\n', want: [['NOOP', 'x {3+}']] },
  { name: 'pipelined commands', input: 'NOOP\r\nNOOP "t"\r\n', want: [['NOOP'], ['NOOP', 't']] },
  { name: 'unterminated quote', input: 'NOOP "abc\r\n', want: ['parse:Unterminated quoted string'] },
  { name: 'bad escape', input: 'NOOP "a\\n"\r\n', want: ['parse:Invalid escape in quoted string'] },
  { name: 'missing space', input: 'NOOP "a""b"\r\n', want: ['parse:Missing space between arguments'] },
  { name: 'command name must be an atom', input: '"NOOP"\r\n', want: ['parse:Expected a command name'] },
  { name: 'empty line', input: '\r\n', want: ['parse:Empty command'] },
  { name: 'HTTP on the port', input: 'GET / HTTP/1.1\r\n', want: ['parse:Invalid characters in command'] },
  { name: 'line too long', input: `NOOP "${'a'.repeat(200)}"\r\nNOOP\r\n`, want: ['error:line-too-long:fatal'], limits: { maxLine: 100 } },
  { name: 'line too long without LF', input: 'a'.repeat(150), want: ['error:line-too-long:fatal'], limits: { maxLine: 100 } },
  {
    name: 'literal over the limit is dropped, the session stays in step',
    input: `PUTSCRIPT "s" {20+}\r\n${'x'.repeat(20)}\r\nNOOP\r\n`,
    want: ['error:literal-too-large', ['NOOP']],
    limits: { maxLiteral: 10, maxLiteralDiscard: 100 },
  },
  { name: 'literal over the discard cap is fatal', input: 'PUTSCRIPT "s" {101+}\r\n', want: ['error:literal-too-large:fatal'], limits: { maxLiteral: 10, maxLiteralDiscard: 100 } },
  { name: 'literal size beyond 32 bits is fatal', input: 'PUTSCRIPT "s" {99999999999+}\r\n', want: ['error:literal-too-large:fatal'] },
  { name: 'quoted string over 1024 octets', input: `NOOP "${'a'.repeat(1025)}"\r\n`, want: ['parse:Quoted string longer than 1024 octets; use a literal'] },
];

describe('framing and parsing (RFC 5804 §4)', () => {
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(run(c.input, c.limits), c.want);
      assert.deepEqual(run(c.input, c.limits, true), c.want, 'fed one byte at a time');
    });
  }

  it('literalMarker ignores markers inside quotes and reads the sync flag', () => {
    assert.deepEqual(literalMarker(Buffer.from('PUTSCRIPT "a" {12+}')), { size: 12, sync: false });
    assert.deepEqual(literalMarker(Buffer.from('PUTSCRIPT "a" {12}')), { size: 12, sync: true });
    assert.equal(literalMarker(Buffer.from('NOOP "{1+}')), null);
    assert.equal(literalMarker(Buffer.from('NOOP "\\"{1+}')), null);
    assert.deepEqual(literalMarker(Buffer.from('NOOP "\\\\" {1+}')), { size: 1, sync: false });
  });

  it('reset() forgets a half-read command (STARTTLS)', () => {
    const f = new CommandFramer();
    assert.deepEqual(f.push(Buffer.from('STARTTLS\r\nCAPAB')).length, 1);
    assert.ok(f.pending > 0);
    f.reset();
    assert.equal(f.pending, 0);
    const [fr] = f.push(Buffer.from('NOOP\r\n'));
    assert.equal(fr?.kind === 'command' && parseCommand(fr.parts).name, 'NOOP');
  });

  it('continuations are exactly one string', () => {
    const [a] = new CommandFramer().push(Buffer.from('{4+}\r\nAAAA\r\n'));
    assert.equal(a?.kind === 'command' && parseContinuation(a.parts).toString(), 'AAAA');
    const [b] = new CommandFramer().push(Buffer.from('"x" "y"\r\n'));
    assert.throws(() => b?.kind === 'command' && parseContinuation(b.parts), ParseError);
  });

  it('UTF-8 is checked strictly', () => {
    assert.equal(decodeUtf8(Buffer.from('Grüße', 'utf8'), 'x'), 'Grüße');
    assert.throws(() => decodeUtf8(Buffer.from([0x66, 0xff]), 'Script'), /Script is not valid UTF-8/);
  });

  it('strings go out quoted when they can, as literals otherwise', () => {
    assert.equal(encodeString('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(encodeString('line 1: x\r\nline 2: y'), '{20}\r\nline 1: x\r\nline 2: y');
    assert.equal(encodeString('é'.repeat(600)), `{1200}\r\n${'é'.repeat(600)}`);
    assert.equal(statusLine('NO', 'gone', 'NONEXISTENT'), 'NO (NONEXISTENT) "gone"\r\n');
    assert.equal(statusLine('OK', 'Done', { tag: 'abc' }), 'OK (TAG "abc") "Done"\r\n');
  });
});
