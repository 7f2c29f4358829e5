// DataGuard: table-driven content checks on DATA bytes (after smtp-server's dot-unstuffing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataGuard, type DataGuardOptions, type DataViolation } from '../../../src/smtp/data-guard.js';

async function run(chunks: string[], opts: Partial<DataGuardOptions> = {}): Promise<{ out: string; violation: DataViolation | null; bytes: number }> {
  const g = new DataGuard({ bareNewline: 'reject', maxLineLength: 20, maxBytes: 1000, ...opts });
  const out: Buffer[] = [];
  g.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((r) => g.once('end', r));
  for (const c of chunks) g.write(Buffer.from(c, 'latin1'));
  g.end();
  await done;
  return { out: Buffer.concat(out).toString('latin1'), violation: g.violation, bytes: g.bytes };
}

const cases: { name: string; chunks: string[]; opts?: Partial<DataGuardOptions>; violation: DataViolation | null; out?: string }[] = [
  { name: 'clean CRLF text', chunks: ['a\r\nb\r\n'], violation: null, out: 'a\r\nb\r\n' },
  { name: 'CRLF split across chunks', chunks: ['a\r', '\nb\r\n'], violation: null, out: 'a\r\nb\r\n' },
  { name: 'bare LF', chunks: ['a\nb\r\n'], violation: 'bare-newline' },
  { name: 'bare CR', chunks: ['a\rb\r\n'], violation: 'bare-newline' },
  { name: 'bare CR at the very end', chunks: ['a\r'], violation: 'bare-newline' },
  { name: 'CR CR LF', chunks: ['a\r\r\n'], violation: 'bare-newline' },
  { name: 'normalize bare LF and CR', chunks: ['a\nb\rc\r', '\n'], opts: { bareNewline: 'normalize' }, violation: null, out: 'a\r\nb\r\nc\r\n' },
  { name: 'normalize LF.LF', chunks: ['x\n.\nMAIL FROM:<e@x>\r\n'], opts: { bareNewline: 'normalize' }, violation: null, out: 'x\r\n.\r\nMAIL FROM:<e@x>\r\n' },
  { name: 'NUL', chunks: ['a\x00b\r\n'], violation: 'nul' },
  { name: 'line of exactly the limit', chunks: ['x'.repeat(20) + '\r\n'], violation: null },
  { name: 'line over the limit, split', chunks: ['x'.repeat(15), 'x'.repeat(6) + '\r\n'], violation: 'line-too-long' },
  { name: 'too big', chunks: ['x\r\n'.repeat(400)], violation: 'too-big' },
];

for (const c of cases) {
  test(`DataGuard: ${c.name}`, async () => {
    const r = await run(c.chunks, c.opts);
    assert.equal(r.violation, c.violation);
    if (c.out !== undefined) assert.equal(r.out, c.out);
    assert.equal(r.bytes, c.chunks.join('').length);
  });
}

test('DataGuard stops passing bytes on after a violation', async () => {
  const r = await run(['ok\r\n', 'bad\n', 'more\r\n'.repeat(10)]);
  assert.equal(r.violation, 'bare-newline');
  assert.equal(r.out, 'ok\r\n');
});
