// Static questions about a compiled script. asksOnlyEnvelope tells whether a script's outcome
// depends on nothing but the envelope (RFC 5228 §5.4 envelope test, constants and variables built
// from them), so a gateway can run it at RCPT time, before the message exists, and refuse a
// recipient there (550 at RCPT instead of after DATA). Anything that reads the message (header,
// address, body, exists, size, mime), asks the host or the clock (duplicate, include,
// mailboxexists, date, environment, spamtest), or acts on the message content (deleteheader,
// vacation, foreverypart, extracttext, replace, enclose) makes the answer "no".
import type { CompiledScript } from './compile.js';
import type { CNode } from './registry.js';

const ENVELOPE_TESTS = new Set(['envelope', 'true', 'false', 'not', 'allof', 'anyof', 'string', 'ihave']);
const NO_MESSAGE_COMMANDS = new Set([
  'if',
  'elsif',
  'else',
  'stop',
  'keep',
  'discard',
  'redirect',
  'fileinto',
  'reject',
  'ereject',
  'set',
  'addflag',
  'setflag',
  'removeflag',
  'addheader',
  'error',
]);

const cache = new WeakMap<CompiledScript, boolean>();

export function asksOnlyEnvelope(script: CompiledScript): boolean {
  let known = cache.get(script);
  if (known === undefined) {
    known = script.commands.length > 0 && script.commands.every(commandOk);
    cache.set(script, known);
  }
  return known;
}

function commandOk(c: CNode): boolean {
  return NO_MESSAGE_COMMANDS.has(c.name) && c.tests.every(testOk) && (c.block ?? []).every(commandOk);
}

function testOk(t: CNode): boolean {
  return ENVELOPE_TESTS.has(t.name) && t.tests.every(testOk);
}
