// api/gateway-files.ts: whether the sieve plugin's files, which run before the store rules, all
// ask only envelope questions (so a store rule may be at stage rcpt), read as the plugin reads
// them: the first sieve entry's `scripts`, relative to the config folder, checked again after an
// edit.
import assert from 'node:assert/strict';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fromObject } from '../../../src/config/load.js';
import { GatewayFiles } from '../../../src/api/gateway-files.js';

const ENVELOPE = 'require "envelope";\nif envelope :is "from" "x@y.example" { discard; }\n';
const READS = 'if header :contains "subject" "x" { discard; }\n';

describe('GatewayFiles', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-gateway-files-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const files = (plugins: unknown[]) => GatewayFiles.fromConfig({ ...fromObject({ plugins }, null), baseDir: dir });

  it('no sieve entry, or one without scripts: nothing runs before the store rules', async () => {
    assert.equal(await files(['relay-acl']).allEnvelopeOnly(), true);
    assert.equal(await files(['relay-acl', 'sieve']).allEnvelopeOnly(), true);
  });

  it('the files of the first sieve entry, relative to the config folder; one that reads the message is enough', async () => {
    await writeFile(join(dir, 'env.sieve'), ENVELOPE);
    await writeFile(join(dir, 'reads.sieve'), READS);
    assert.equal(await files([{ sieve: { scripts: ['env.sieve'] } }]).allEnvelopeOnly(), true);
    assert.equal(await files([{ sieve: { scripts: ['env.sieve', 'reads.sieve'] } }]).allEnvelopeOnly(), false);
    // Missing or not compiling, before any good read: counted as reading the message.
    assert.equal(await files([{ sieve: { scripts: ['missing.sieve'] } }]).allEnvelopeOnly(), false);
    await writeFile(join(dir, 'broken.sieve'), 'foo;\n');
    assert.equal(await files([{ sieve: { scripts: ['broken.sieve'] } }]).allEnvelopeOnly(), false);
  });

  it('calls made together on a fresh instance all wait for the first read', async () => {
    await writeFile(join(dir, 'env2.sieve'), ENVELOPE);
    const f = files([{ sieve: { scripts: ['env2.sieve'] } }]);
    assert.deepEqual(await Promise.all([f.allEnvelopeOnly(), f.allEnvelopeOnly(), f.allEnvelopeOnly()]), [true, true, true]);
  });

  it('an edited file is read again after the stat interval; a broken edit keeps the last answer', async () => {
    const path = join(dir, 'edited.sieve');
    await writeFile(path, ENVELOPE);
    const f = files([{ sieve: { scripts: ['edited.sieve'] } }]);
    assert.equal(await f.allEnvelopeOnly(), true);
    const touch = async (text: string, at: number) => {
      await writeFile(path, text);
      await utimes(path, at, at);
    };
    await touch('foo;\n', Date.now() / 1000 + 10);
    await new Promise((res) => setTimeout(res, 1100));
    assert.equal(await f.allEnvelopeOnly(), true, 'does not compile: the last answer stands');
    await touch(READS, Date.now() / 1000 + 20);
    assert.equal(await f.allEnvelopeOnly(), true, 'within the interval: not read again');
    await new Promise((res) => setTimeout(res, 1100));
    assert.equal(await f.allEnvelopeOnly(), false);
  });
});
