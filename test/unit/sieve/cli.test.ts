// `postern sieve check` and `postern sieve test` (CONTRACT.md): output formats and exit codes.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runSieveCommand } from '../../../src/cli/sieve.js';
import { sieveSchema } from '../../../src/sieve/config.js';

const DIR = fileURLToPath(new URL('../../fixtures/sieve/cli/', import.meta.url));
const f = (n: string) => DIR + n;

async function cli(argv: string[], sieve: Record<string, unknown> = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await runSieveCommand(argv, { stdout, stderr, config: { sieve: sieveSchema.parse(sieve) } });
  return { code, out, err };
}

const testArgs = (script: string, extra: string[] = []) => ['test', '--script', f(script), '--message', f('message.eml'), '--from', 'a@example.com', '--to', 'user@example.org', ...extra];

describe('postern sieve check', () => {
  it('a good script: exit 0, no output', async () => {
    const r = await cli(['check', f('good.sieve')]);
    assert.deepEqual([r.code, r.out, r.err], [0, '', '']);
  });
  it('a bad script: FILE:LINE:COL: message, exit 1', async () => {
    const r = await cli(['check', f('good.sieve'), f('bad.sieve')]);
    assert.equal(r.code, 1);
    assert.equal(r.err, `${f('bad.sieve')}:3:3: unknown command 'filein'\n`);
  });
  it('no file is a usage error', async () => assert.equal((await cli(['check'])).code, 2));
  it('with a config, sieve.extensions applies: a script requiring another extension is an error', async () => {
    const r = await cli(['check', f('good.sieve')], { extensions: ['fileinto'] });
    assert.equal(r.code, 1);
    assert.match(r.err, /good\.sieve:1:22: extension "imap4flags" is not enabled here \(sieve\.extensions\)\n/);
  });
});

describe('postern sieve test', () => {
  it('--json prints the CONTRACT.md object', async () => {
    const r = await cli(testArgs('good.sieve', ['--json']));
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j), ['status', 'errors', 'actions', 'implicitKeep', 'implicitKeepFlags']);
    assert.deepEqual(j.actions, [{ type: 'fileinto', mailbox: 'Archive', flags: ['\\Seen'], copy: false, create: false }]);
    assert.equal(j.implicitKeep, false);
  });
  it('human output: one action a line', async () => {
    const r = await cli(testArgs('good.sieve'));
    assert.equal(r.out, 'fileinto "Archive" flags="\\\\Seen"\n');
  });
  it('stored appears only with editheader', async () => {
    const j = JSON.parse((await cli(testArgs('edit.sieve', ['--json']))).out);
    assert.deepEqual(j.stored[0].mailbox, 'INBOX');
    assert.deepEqual(j.stored[0].headers[0], ['X-Tag', '1']);
  });
  it('compile error: prints compile-error, exit 1', async () => {
    const r = await cli(testArgs('bad.sieve'));
    assert.equal(r.code, 1);
    assert.equal(r.out, 'compile-error\n');
    const j = JSON.parse((await cli(testArgs('bad.sieve', ['--json']))).out);
    assert.equal(j.status, 'compile-error');
    assert.deepEqual(j.errors, [{ line: 3, column: 3, message: "unknown command 'filein'" }]);
  });
  it('missing options are a usage error', async () => assert.equal((await cli(['test', '--script', f('good.sieve')])).code, 2));
  it('sieve.extensions: a script that requires an extension the config does not enable does not compile', async () => {
    const off = JSON.parse((await cli(testArgs('good.sieve', ['--json']), { extensions: ['fileinto'] })).out);
    assert.equal(off.status, 'compile-error');
    assert.deepEqual(off.errors[0], { line: 1, column: 22, message: 'extension "imap4flags" is not enabled here (sieve.extensions)' });
    const on = await cli(testArgs('good.sieve'), { extensions: ['fileinto', 'IMAP4FLAGS'] });
    assert.equal(on.code, 0, on.err);
  });
});
