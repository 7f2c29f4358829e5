// `postern start`'s signal handling (src/cli/main.ts runStart) with a fake daemon: the first
// SIGTERM/SIGINT stops it and resolves 0; a second one while stopping resolves 1 at once.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { runStart } from '../../../src/cli/main.js';
import type { CliIo } from '../../../src/cli/io.js';
import type { Config } from '../../../src/config/load.js';

function io(): CliIo & { err: () => string } {
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  return { stdin: new PassThrough(), stdout: new PassThrough(), stderr, env: { POSTERN_CONFIG: '' }, err: () => err };
}

/** `hang`: stop() never finishes (no timer either, so nothing keeps the test process alive). */
function fakeDaemon(hang = false) {
  const calls: string[] = [];
  let config: Config | undefined;
  return {
    calls,
    config: () => config,
    load: async () => ({
      startDaemon: async (c: Config) => {
        config = c;
        calls.push('start');
        return {
          stop: async () => {
            calls.push('stop');
            await new Promise((r) => (hang ? undefined : setImmediate(r)));
            calls.push('stopped');
          },
        };
      },
    }),
  };
}

/** Waits until runStart has registered its handlers (they are added after startDaemon resolves). */
async function started(calls: string[]) {
  while (!calls.includes('start')) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}

describe('postern start signals', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} stops the daemon and exits 0`, async () => {
      const d = fakeDaemon();
      const before = process.listenerCount(signal);
      const done = runStart([], io(), d.load);
      await started(d.calls);
      assert.equal(process.listenerCount(signal), before + 1);
      process.emit(signal, signal);
      assert.equal(await done, 0);
      assert.deepEqual(d.calls, ['start', 'stop', 'stopped']);
      assert.equal(process.listenerCount(signal), before, 'handlers removed');
      // With no config file given (and none in the working directory), the defaults are used.
      assert.ok(d.config()?.listen.smtp);
    });
  }

  it('a second signal while stopping exits 1 without waiting', async () => {
    const d = fakeDaemon(true);
    const sigterm = process.listenerCount('SIGTERM');
    const out = io();
    const done = runStart([], out, d.load);
    await started(d.calls);
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGINT', 'SIGINT');
    assert.equal(await done, 1);
    assert.match(out.err(), /SIGINT again while stopping/);
    assert.deepEqual(d.calls, ['start', 'stop']);
    assert.equal(process.listenerCount('SIGTERM'), sigterm, 'handlers removed');
  });
});
