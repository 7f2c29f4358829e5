// Every shipped example under rules/ compiles (what `postern sieve check` does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { compile } from '../../../src/sieve/compile.js';

const RULES = resolve(import.meta.dirname, '..', '..', '..', 'rules');

function sieveFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sieveFiles(p) : n.endsWith('.sieve') ? [p] : [];
  });
}

test('every rules/ file compiles', () => {
  const files = sieveFiles(RULES);
  assert.ok(files.length > 0, 'rules/ holds at least one example');
  for (const f of files) {
    const r = compile(readFileSync(f, 'utf8'));
    assert.ok(r.ok, `${f}: ${r.ok ? '' : r.errors.map((e) => `${e.line}:${e.column}: ${e.message}`).join('; ')}`);
  }
});

test('the bench generators produce scripts that compile', async () => {
  const { adminRules, longScript } = await import('../../../bench/sieve.js');
  for (const text of [adminRules(100), adminRules(100, { body: true }), longScript(1000)]) {
    const r = compile(text);
    assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.errors.slice(0, 3)));
  }
});
