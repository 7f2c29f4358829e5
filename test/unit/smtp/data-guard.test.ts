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

// The byte-by-byte reference: what the guard must decide for the whole input, however it is
// split into chunks (the guard takes an indexOf fast path for clean chunks).
function reference(input: string, opts: DataGuardOptions): { violation: DataViolation | null; out: string } {
  let violation: DataViolation | null = null;
  const flag = (v: DataViolation) => (violation ??= v);
  let out = '';
  let pendingCR = false;
  let lineLen = 0;
  const newline = () => {
    out += '\r\n';
    lineLen = 0;
  };
  for (const ch of input) {
    if (pendingCR) {
      pendingCR = false;
      if (ch === '\n') {
        newline();
        continue;
      }
      if (opts.bareNewline === 'normalize') newline();
      else flag('bare-newline');
    }
    if (ch === '\r') {
      pendingCR = true;
      continue;
    }
    if (ch === '\n') {
      if (opts.bareNewline === 'normalize') newline();
      else flag('bare-newline');
      continue;
    }
    if (ch === '\0') flag('nul');
    if (++lineLen > opts.maxLineLength) flag('line-too-long');
    out += ch;
  }
  if (pendingCR) {
    if (opts.bareNewline === 'normalize') out += '\r\n';
    else flag('bare-newline');
  }
  return { violation, out };
}

test('DataGuard: any split of any input decides as the byte-by-byte reference', async () => {
  const fc = await import('fast-check');
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.constantFrom('a', 'b', '.', '\r\n', '\r\n', '\r', '\n', '\0'), { maxLength: 60 }),
      fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 20 }),
      fc.constantFrom<'reject' | 'normalize'>('reject', 'normalize'),
      async (parts, cuts, bareNewline) => {
        const input = parts.join('');
        const chunks: string[] = [];
        for (let i = 0, k = 0; i < input.length; k++) {
          const n = cuts[k % cuts.length]!;
          chunks.push(input.slice(i, i + n));
          i += n;
        }
        const opts = { bareNewline, maxLineLength: 8, maxBytes: 1_000_000 };
        const want = reference(input, opts);
        const got = await run(chunks, opts);
        assert.equal(got.violation, want.violation);
        if (want.violation === null) assert.equal(got.out, want.out);
      },
    ),
    { numRuns: 500 },
  );
});
