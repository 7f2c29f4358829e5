// The embedded store: the Store contract, persistence across reopen, journal compaction, torn and
// corrupt lines, and sharing between processes (a child process writes and publishes; this one
// sees the write at its next read and gets the event).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createEmbeddedStore, type EmbeddedStore, type EmbeddedStoreOptions } from '../../../src/store/embedded.js';
import { StoreFormatError, StoreUnavailableError } from '../../../src/store/errors.js';
import { LockTimeoutError, tryLockSync, unlockSync } from '../../../src/store/flock.js';
import { StateMap } from '../../../src/store/state-map.js';
import type { ChangeEvent } from '../../../src/store/store.js';
import { storeFiles } from '../../helpers/store-files.js';
import { captureLogger } from '../queue/helpers.js';
import { runStoreContract, sleep, waitFor } from './contract.js';

const root = mkdtempSync(join(tmpdir(), 'postern-embedded-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => mkdtempSync(join(root, `t${n++}-`));

runStoreContract('embedded', () => createEmbeddedStore(freshDir()));
// The same contract with compaction after nearly every write: snapshots must not change semantics.
runStoreContract('embedded (compacting)', () => createEmbeddedStore(freshDir(), { compactMinBytes: 64 }));

const stateFiles = (dir: string) => readdirSync(join(dir, 'state')).sort();
const journalOf = (dir: string) => join(dir, 'state', stateFiles(dir).find((f) => f.startsWith('store.journal.'))!);

function open(dir: string, opts: EmbeddedStoreOptions = {}) {
  return createEmbeddedStore(dir, opts);
}

describe('embedded store: persistence', () => {
  it('strings, hashes and TTLs survive a reopen; expired keys do not', async () => {
    const dir = freshDir();
    const a = open(dir);
    await a.set('s', 'v\nwith newline');
    await a.hset('h', 'f', '1');
    await a.hset('h', 'g', '2');
    await a.hdel('h', 'f');
    await a.set('vol', 'x', { ttlMs: 60_000 });
    await a.set('short', 'x', { ttlMs: 20 });
    await a.incr('n', { by: 41 });
    await a.incr('n');
    await a.set('gone', 'x');
    await a.del('gone');
    await a.close();
    await sleep(40);
    const b = open(dir);
    try {
      assert.equal(await b.get('s'), 'v\nwith newline');
      assert.deepEqual(await b.hgetall('h'), { g: '2' });
      const t = await b.ttl('vol');
      assert.ok(t > 59_000 && t <= 60_000, `ttl ${t}`);
      assert.equal(await b.get('short'), null);
      assert.equal(await b.get('n'), '42');
      assert.equal(await b.get('gone'), null);
    } finally {
      await b.close();
    }
  });

  it('lays out lock, journal 0 and no snapshot until the first compaction', async () => {
    const dir = freshDir();
    const s = open(dir);
    await s.set('k', 'v');
    await s.close();
    assert.deepEqual(stateFiles(dir), ['store.journal.0.jsonl', 'store.lock']);
    const lines = readFileSync(journalOf(dir), 'utf8').trim().split('\n');
    assert.deepEqual(lines.map((l) => JSON.parse(l) as unknown), [
      { o: 'format', v: 1 },
      { o: 'set', k: 'k', v: 'v' },
    ]);
  });

  it('compaction writes a snapshot, starts a new journal and keeps every value', async () => {
    const dir = freshDir();
    const s = open(dir, { compactMinBytes: 2048 });
    for (let i = 0; i < 300; i++) await s.set(`k:${i % 50}`, `value ${i}`);
    await s.hset('h', 'f', 'v');
    await s.set('vol', 'x', { ttlMs: 60_000 });
    await s.close();
    const files = stateFiles(dir);
    assert.ok(files.includes('store.snapshot.json'), files.join());
    const journals = files.filter((f) => f.startsWith('store.journal.'));
    assert.equal(journals.length, 1, journals.join());
    assert.notEqual(journals[0], 'store.journal.0.jsonl');
    const snap = JSON.parse(readFileSync(join(dir, 'state', 'store.snapshot.json'), 'utf8'));
    assert.equal(snap.format, 'postern-store');
    assert.equal(snap.version, 1);
    assert.equal(`store.journal.${snap.gen}.jsonl`, journals[0]);
    assert.equal(readFileSync(join(dir, 'state', journals[0]!), 'utf8').split('\n')[0], '{"o":"format","v":1}');
    const r = open(dir);
    try {
      for (let i = 250; i < 300; i++) assert.equal(await r.get(`k:${i % 50}`), `value ${i}`);
      assert.equal(await r.hget('h', 'f'), 'v');
      assert.ok((await r.ttl('vol')) > 0);
    } finally {
      await r.close();
    }
  });

  it('a torn last line (writer died mid-write) is skipped, and later writes stay readable', async () => {
    const dir = freshDir();
    const a = open(dir);
    await a.set('before', '1');
    await a.close();
    appendFileSync(journalOf(dir), '{"o":"set","k":"torn","v":"ha');
    const b = open(dir);
    assert.equal(await b.get('before'), '1');
    assert.equal(await b.get('torn'), null);
    await b.set('after', '2');
    await b.close();
    const c = open(dir);
    try {
      assert.equal(await c.get('before'), '1');
      assert.equal(await c.get('after'), '2');
      assert.equal(await c.get('torn'), null);
      assert.deepEqual((await c.keys('')).sort(), ['after', 'before']);
    } finally {
      await c.close();
    }
  });

  it('an unreadable line in the middle is skipped; its neighbours apply', async () => {
    const dir = freshDir();
    mkdtempSync(join(dir, 'x')); // unrelated content in data_dir is left alone
    const a = open(dir);
    await a.close();
    writeFileSync(journalOf(dir), '{"o":"set","k":"a","v":"1"}\nnot json at all\n{"o":"bogus"}\n{"o":"set","k":"b","v":"2"}\n');
    const b = open(dir);
    try {
      assert.equal(await b.get('a'), '1');
      assert.equal(await b.get('b'), '2');
    } finally {
      await b.close();
    }
  });

  it('only TTL keys and publishes skip the fsync', () => {
    const cases: [Parameters<typeof StateMap.durable>[0], boolean][] = [
      [{ o: 'set', k: 'k', v: 'v' }, true],
      [{ o: 'set', k: 'k', v: 'v', x: Date.now() + 1000 }, false],
      [{ o: 'del', k: ['k'] }, true],
      [{ o: 'hset', k: 'k', f: 'f', v: 'v' }, true],
      [{ o: 'hdel', k: 'k', f: ['f'] }, true],
      [{ o: 'pub', c: 'c', m: 'm' }, false],
    ];
    for (const [e, want] of cases) assert.equal(StateMap.durable(e), want, JSON.stringify(e));
  });
});

describe('embedded store: two handles on one data_dir (as two processes)', () => {
  it('a write by one is seen by the other at its next read, events included', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      const events: ChangeEvent[] = [];
      b.subscribe('directory', (ev) => events.push(ev));
      await a.set('user:x', 'alice');
      await a.hset('users', 'alice@example.test', '{}');
      await a.publish('directory', 'changed');
      assert.equal(await b.get('user:x'), 'alice');
      assert.equal(await b.hget('users', 'alice@example.test'), '{}');
      await waitFor(() => events.length === 1, 'the event in the other handle');
      assert.deepEqual(events[0], { channel: 'directory', message: 'changed' });
      await b.del('user:x');
      assert.equal(await a.get('user:x'), null);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a handle that read in this turn sees writes of the other handle from the next turn on, and its own at once', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      assert.equal(await b.get('k'), null);
      await a.set('k', 'v1');
      await new Promise((r) => setImmediate(r));
      assert.equal(await b.get('k'), 'v1', 'seen in a later turn');
      await a.set('k', 'v2');
      await sleep(5);
      assert.equal(await b.get('k'), 'v2');
      // Its own writes are always there at once.
      await b.set('k', 'v3');
      assert.equal(await b.get('k'), 'v3');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a later callback of the same event-loop iteration looks again: a write that finished in between is seen', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      await b.get('warm');
      // Three callbacks of one check phase, in order: b reads (and looks), a's write is flushed
      // (its batch waits for a setImmediate queued after the first one), b reads again.
      let written = false;
      const seen = await new Promise<string | null>((resolve, reject) => {
        setImmediate(() => {
          b.get('k').catch(reject);
        });
        a.set('k', 'v1').then(() => {
          written = true;
        }, reject);
        // The flush's setImmediate is queued one microtask later; queue the second read after it.
        const afterFlushQueued = Promise.resolve().then(() => undefined).then(() => undefined);
        void afterFlushQueued.then(() => setImmediate(() => {
          if (!written) {
            reject(new Error('the write did not finish before the second read: the test proves nothing'));
            return;
          }
          b.get('k').then(resolve, reject);
        }));
      });
      assert.equal(seen, 'v1');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('incr and set-if-absent stay atomic across handles', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      const got = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).incr('n')));
      assert.deepEqual([...got].sort((x, y) => x - y), Array.from({ length: 200 }, (_, i) => i + 1));
      assert.equal(await a.get('n'), '200');
      assert.equal(await b.get('n'), '200');
      const nx = await Promise.all([a.set('once', 'a', { ifAbsent: true }), b.set('once', 'b', { ifAbsent: true })]);
      assert.equal(nx.filter(Boolean).length, 1);
      assert.equal(await a.get('once'), await b.get('once'));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('the reader follows the writer through compactions, without losing events', async () => {
    const dir = freshDir();
    const a = open(dir, { compactMinBytes: 512 });
    const b = open(dir, { compactMinBytes: 512 });
    try {
      const got: string[] = [];
      b.subscribe('c', (ev) => got.push(ev.message));
      for (let i = 0; i < 100; i++) {
        await a.set(`k${i % 10}`, `v${i}`);
        await a.publish('c', String(i));
        if (i % 7 === 0) assert.equal(await b.get(`k${i % 10}`), `v${i}`);
      }
      await waitFor(() => got.length >= 100 || got.includes('{"resync":true}'), 'the events');
      if (!got.includes('{"resync":true}')) assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => String(i)));
      for (let i = 90; i < 100; i++) assert.equal(await b.get(`k${i % 10}`), `v${i}`);
      assert.ok(stateFiles(dir).includes('store.snapshot.json'));
      // And the other way round, after the compactions.
      await b.set('from-b', 'yes');
      assert.equal(await a.get('from-b'), 'yes');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('embedded store: another process', () => {
  it('a child process writes and publishes; this process sees both without reopening', async () => {
    const dir = freshDir();
    const s = open(dir);
    try {
      const events: ChangeEvent[] = [];
      s.subscribe('directory', (ev) => events.push(ev));
      await s.set('from-parent', 'p');
      const moduleUrl = new URL('../../../src/store/embedded.ts', import.meta.url).href;
      const code = `
        const { createEmbeddedStore } = await import(process.argv[1]);
        const s = createEmbeddedStore(process.argv[2]);
        if ((await s.get('from-parent')) !== 'p') process.exit(3);
        await s.set('from-child', 'c');
        await s.incr('hits', { ttlMs: 60000 });
        await s.publish('directory', JSON.stringify({ op: 'user.add', address: 'bob@example.test' }));
        await s.close();
      `;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, moduleUrl, dir], { stdio: ['ignore', 'inherit', 'inherit'] });
      const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      assert.equal(status, 0);
      assert.equal(await s.get('from-child'), 'c');
      assert.equal(await s.get('hits'), '1');
      await waitFor(() => events.length === 1, 'the event published by the child');
      assert.deepEqual(JSON.parse(events[0]!.message), { op: 'user.add', address: 'bob@example.test' });
    } finally {
      await s.close();
    }
  });

  it('three processes incrementing at once, through compactions: no update lost', async () => {
    const dir = freshDir();
    const moduleUrl = new URL('../../../src/store/embedded.ts', import.meta.url).href;
    const code = `
      const { createEmbeddedStore } = await import(process.argv[1]);
      const s = createEmbeddedStore(process.argv[2], { compactMinBytes: 2048 });
      const me = process.argv[3];
      for (let i = 0; i < 300; i++) {
        await s.incr('total');
        await s.hset('seen', me, String(i + 1));
        if (i % 3 === 0) await Promise.all([s.incr('total'), s.incr('total', { by: -1 })]);
      }
      await s.close();
    `;
    let running = 2;
    const runs = ['a', 'b'].map(
      (me) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, moduleUrl, dir, me], { stdio: ['ignore', 'inherit', 'inherit'] });
          child.on('exit', (c) => {
            running--;
            resolve(c);
          });
        }),
    );
    // This process is the third writer, for as long as the children run.
    const s = open(dir, { compactMinBytes: 2048 });
    try {
      let mine = 0;
      while (running > 0) {
        await s.incr('total');
        mine++;
        await sleep(1);
      }
      assert.deepEqual(await Promise.all(runs), [0, 0]);
      assert.equal(await s.get('total'), String(600 + mine));
      assert.deepEqual(await s.hgetall('seen'), { a: '300', b: '300' });
      assert.ok(stateFiles(dir).includes('store.snapshot.json'));
    } finally {
      await s.close();
    }
  });

  it('a writer killed with SIGKILL mid-stream leaves a consistent store', async () => {
    const dir = freshDir();
    const moduleUrl = new URL('../../../src/store/embedded.ts', import.meta.url).href;
    // Each key k:i is written before the counter reaches i+1, in separate awaited writes.
    const code = `
      const { createEmbeddedStore } = await import(process.argv[1]);
      const s = createEmbeddedStore(process.argv[2], { compactMinBytes: 4096 });
      for (let i = 0; ; i++) {
        await s.set('k:' + i, 'v' + i);
        await s.incr('n');
        if (i === 50) process.stdout.write('running\\n');
      }
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, moduleUrl, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await sleep(100);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const s = open(dir);
    try {
      const n = Number(await s.get('n'));
      assert.ok(n > 50, `counter ${n}`);
      for (let i = 0; i < n; i++) assert.equal(await s.get(`k:${i}`), `v${i}`, `k:${i}`);
      // The store stays writable after the crash.
      assert.equal(await s.incr('n'), n + 1);
    } finally {
      await s.close();
    }
  });

  it('a peer holding the lock too long makes writes fail, not hang; reads still work', async () => {
    const dir = freshDir();
    const s = open(dir, { lockTimeoutMs: 100 });
    const fd = openSync(join(dir, 'state', 'store.lock'), 'r');
    try {
      await s.set('k', 'before');
      assert.equal(tryLockSync(fd), true);
      await assert.rejects(s.set('k', 'during'), LockTimeoutError);
      assert.equal(await s.get('k'), 'before');
      unlockSync(fd);
      await s.set('k', 'after');
      assert.equal(await s.get('k'), 'after');
    } finally {
      closeSync(fd);
      await s.close();
    }
  });

  it('events arrive without any read (fs.watch or the poll)', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir, { pollMs: 50 });
    try {
      const got: string[] = [];
      b.subscribe('rules', (ev) => got.push(ev.message));
      await a.publish('rules', 'reload');
      await waitFor(() => got.length === 1, 'the event', 1000);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

/** The store's own disk writes (embedded.ts), to inject the faults a test cannot make the disk produce. */
interface DiskWrites {
  writeJournal(buf: Buffer): void;
  syncJournal(): void;
  removeFile(path: string): void;
  poke(full: boolean): void;
}
const disk = (s: EmbeddedStore) => s as unknown as DiskWrites;
const fault = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

/**
 * A batch of two writes to `a` that the disk refuses: both rejected, neither `a` nor `b` sees
 * them, and the next write (which ends a torn batch for good) is seen by both.
 */
async function assertBatchRefused(a: EmbeddedStore, b: EmbeddedStore): Promise<void> {
  const r = await Promise.allSettled([a.hset('h', 'f1', '1'), a.hset('h', 'f2', '2')]);
  assert.deepEqual(r.map((x) => x.status), ['rejected', 'rejected']);
  assert.deepEqual(await a.hgetall('h'), { f0: '0' });
  await sleep(5);
  assert.deepEqual(await b.hgetall('h'), { f0: '0' });
  await a.hset('h', 'f3', '3');
  await sleep(5);
  assert.deepEqual(await a.hgetall('h'), { f0: '0', f3: '3' });
  assert.deepEqual(await b.hgetall('h'), { f0: '0', f3: '3' });
}

/** A fresh handle on `dir` (a restart) reads hash `h` as `want`. */
async function assertReopenSees(dir: string, want: Record<string, string>): Promise<void> {
  const c = open(dir);
  try {
    assert.deepEqual(await c.hgetall('h'), want);
  } finally {
    await c.close();
  }
}

describe('embedded store: a batch of writes the disk refuses is not applied anywhere', () => {
  it('a batch written only in part (ENOSPC): rejected, and neither this handle, another one nor a reopen sees any of it', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      await a.hset('h', 'f0', '0');
      const d = disk(a);
      const real = d.writeJournal.bind(a);
      let calls = 0;
      // The disk fills up: all of the batch but its last byte gets written.
      d.writeJournal = (buf) => {
        if (calls++ > 0) return real(buf);
        real(buf.subarray(0, buf.length - 1));
        throw fault('ENOSPC');
      };
      await assertBatchRefused(a, b);
    } finally {
      await a.close();
      await b.close();
    }
    await assertReopenSees(dir, { f0: '0', f3: '3' });
  });

  it('a batch whose fsync fails (EIO): rejected, and taken back from a handle that had already read it', async () => {
    const dir = freshDir();
    const a = open(dir);
    const b = open(dir);
    try {
      await a.hset('h', 'f0', '0');
      await sleep(5);
      assert.deepEqual(await b.hgetall('h'), { f0: '0' });
      const d = disk(a);
      const real = d.syncJournal.bind(a);
      let calls = 0;
      d.syncJournal = () => {
        if (calls++ > 0) return real();
        // Another process reads the journal between the write and the failed fsync.
        disk(b).poke(false);
        throw fault('EIO');
      };
      await assertBatchRefused(a, b);
    } finally {
      await a.close();
      await b.close();
    }
    await assertReopenSees(dir, { f0: '0', f3: '3' });
  });
});

describe('embedded store: compaction whose old journal cannot be removed', () => {
  it('an end line of a compaction that never committed (a crash before the rename) is read past', async () => {
    const dir = freshDir();
    const a = open(dir);
    await a.set('k', '1');
    await a.close();
    appendFileSync(journalOf(dir), '{"o":"end"}\n');
    const b = open(dir);
    const c = open(dir);
    try {
      assert.equal(await c.get('k'), '1');
      await b.set('k', '2');
      await sleep(5);
      assert.equal(await c.get('k'), '2');
      assert.deepEqual(stateFiles(dir), ['store.journal.0.jsonl', 'store.lock']);
    } finally {
      await b.close();
      await c.close();
    }
    const d = open(dir);
    try {
      assert.equal(await d.get('k'), '2');
    } finally {
      await d.close();
    }
  });


  it('another process reads the new generation at its next read, not at its next poll', async () => {
    const dir = freshDir();
    // The poll is out of the picture: only what a read does counts.
    const a = open(dir, { compactMinBytes: 512, pollMs: 60_000 });
    const b = open(dir, { pollMs: 60_000 });
    try {
      disk(a).removeFile = () => {
        throw fault('EIO');
      };
      await a.set('k', 'before');
      await sleep(5);
      assert.equal(await b.get('k'), 'before');
      for (let i = 0; !stateFiles(dir).includes('store.snapshot.json'); i++) await a.set(`fill${i % 5}`, 'x'.repeat(100));
      assert.equal(stateFiles(dir).filter((f) => f.startsWith('store.journal.')).length, 2, 'the old journal is still there');
      await a.set('k', 'after');
      await sleep(5);
      assert.equal(await b.get('k'), 'after');
      // And the other way round: b writes into the new generation, a reads it.
      await b.set('from-b', 'yes');
      await sleep(5);
      assert.equal(await a.get('from-b'), 'yes');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('embedded store: files in a newer format', () => {
  const isNewer = (e: unknown) => {
    assert.ok(e instanceof StoreFormatError, String(e));
    assert.ok(e instanceof StoreUnavailableError, 'a temporary failure for sessions');
    assert.equal(e.code, 451);
    assert.equal(e.enhanced, '4.3.0');
    assert.equal(e.found, 2);
    assert.equal(e.supported, 1);
    assert.match(e.message, /is in store format 2, written by a newer Postern; this build reads format 1 and leaves it untouched\. Run the newer build/);
    return true;
  };

  /** A store of this build holding k = v, with its writer closed. */
  async function storeWithK(): Promise<string> {
    const dir = freshDir();
    const a = open(dir);
    await a.set('k', 'v');
    await a.close();
    return dir;
  }

  it('a journal without a format line (an older build) is format 1; a format line of 1 anywhere is too', async () => {
    const dir = freshDir();
    await open(dir).close();
    writeFileSync(journalOf(dir), '{"o":"set","k":"a","v":"1"}\n{"o":"format","v":1}\n{"o":"set","k":"b","v":"2"}\n');
    const b = open(dir);
    try {
      assert.equal(await b.get('a'), '1');
      assert.equal(await b.get('b'), '2');
      await b.set('c', '3');
    } finally {
      await b.close();
    }
  });

  it('a format line of any other version or spelling is refused too: a future build may write it so', async () => {
    const cases: [string, string][] = [
      ['{ "o": "format", "v": 2 }', '2'],
      ['{"v":2,"o":"format"}', '2'],
      ['{"o":"format","v":"2"}', '"2"'],
      ['{"o":"format","v":1.5}', '1.5'],
      ['{"o":"format","v":0}', '0'],
      ['{"o":"format"}', 'without a version'],
    ];
    for (const [line, shown] of cases) {
      const dir = await storeWithK();
      appendFileSync(journalOf(dir), `${line}\n{"o":"set","k":"k","v":"w"}\n`);
      const before = storeFiles(dir);
      assert.throws(
        () => open(dir),
        (e: unknown) => e instanceof StoreFormatError && e.message.includes(`is in store format ${shown}, written by a newer Postern`),
        line,
      );
      assert.deepEqual(storeFiles(dir), before, line);
    }
  });

  const atOpen: [string, (dir: string) => void][] = [
    ['a journal that starts in format 2', (dir) => writeFileSync(journalOf(dir), '{"o":"format","v":2}\n{"o":"set2","k":"k","v":"new"}\n')],
    ['a journal that goes on in format 2', (dir) => appendFileSync(journalOf(dir), '{"o":"format","v":2}\n{"o":"set","k":"k","v":"w"}\n')],
    [
      'a snapshot in format 2',
      (dir) => {
        // What a newer build's compaction leaves: the old journal ended, snapshot and journal 1 in format 2.
        appendFileSync(journalOf(dir), '{"o":"end"}\n');
        writeFileSync(join(dir, 'state', 'store.snapshot.json'), JSON.stringify({ format: 'postern-store', version: 2, gen: 1, strings: [['k', 'v', null]], hashes: [], more: {} }));
        writeFileSync(join(dir, 'state', 'store.journal.1.jsonl'), '{"o":"format","v":2}\n');
      },
    ],
  ];
  for (const [what, make] of atOpen) {
    it(`${what}: opening it fails with what to do, and writes nothing`, async () => {
      const dir = await storeWithK();
      make(dir);
      const before = storeFiles(dir);
      const cap = captureLogger();
      assert.throws(() => open(dir, { log: cap.log }), isNewer);
      assert.throws(() => open(dir, { log: cap.log }), isNewer, 'and again: nothing was repaired or removed');
      assert.deepEqual(storeFiles(dir), before);
      const logged = cap.lines.find((l) => l.evt === 'store.format_newer');
      assert.deepEqual([logged?.found, logged?.supported, logged?.level], [2, 1, 50]);
    });
  }

  it('a running store that meets a newer format (a newer CLI wrote to it) stops reading and writing, and says so once', async () => {
    const dir = await storeWithK();
    const cap = captureLogger();
    const a = open(dir, { log: cap.log, pollMs: 20 });
    try {
      assert.equal(await a.get('k'), 'v');
      assert.equal(a.health().healthy, true);
      appendFileSync(journalOf(dir), '{"o":"format","v":2}\n{"o":"set","k":"k","v":"w"}\n');
      const before = storeFiles(dir);
      // A write first: it catches up under the lock, meets the line and appends nothing.
      await assert.rejects(a.set('x', '1'), isNewer);
      await assert.rejects(a.get('k'), isNewer);
      await assert.rejects(a.incr('n'), isNewer);
      assert.throws(() => a.subscribe('c', () => undefined), isNewer);
      await sleep(60); // a few polls: they read nothing more either
      assert.deepEqual(storeFiles(dir), before);
      const h = a.health();
      assert.equal(h.healthy, false);
      assert.match(h.error ?? '', /store format 2/);
      assert.equal(cap.lines.filter((l) => l.evt === 'store.format_newer').length, 1);
    } finally {
      await a.close();
    }
  });

  /** What a newer build's compaction leaves: the old journal ended and gone, snapshot and journal 1 in format 2. */
  function newerCompaction(dir: string): void {
    const journal0 = journalOf(dir);
    appendFileSync(journal0, '{"o":"end"}\n');
    writeFileSync(join(dir, 'state', 'store.snapshot.json'), JSON.stringify({ format: 'postern-store', version: 2, gen: 1, strings: [], hashes: [] }));
    writeFileSync(join(dir, 'state', 'store.journal.1.jsonl'), '{"o":"format","v":2}\n');
    rmSync(journal0);
  }

  it('a running reader meets the line in a read: it stops, and its subscribers are told to drop their caches', async () => {
    const dir = await storeWithK();
    const reader = open(dir, { pollMs: 60_000 });
    const events: string[] = [];
    try {
      reader.subscribe('directory', (ev) => events.push(ev.message));
      assert.equal(await reader.get('k'), 'v');
      appendFileSync(journalOf(dir), '{"o":"format","v":2}\n');
      await sleep(5);
      await assert.rejects(reader.get('k'), isNewer);
      await waitFor(() => events.length > 0, 'resync');
      assert.deepEqual(events, ['{"resync":true}']);
    } finally {
      await reader.close();
    }
  });

  it('a running store meets a newer compaction at a reload: a write and a read of the same turn both fail with it', async () => {
    const dir = await storeWithK();
    const other = open(dir, { pollMs: 60_000 });
    try {
      assert.equal(await other.get('k'), 'v');
      newerCompaction(dir);
      const before = storeFiles(dir);
      await sleep(5);
      const [w, r] = await Promise.allSettled([other.set('k', 'old'), other.get('k')]);
      assert.equal(w.status, 'rejected');
      assert.equal(r.status, 'rejected');
      isNewer((w as PromiseRejectedResult).reason);
      isNewer((r as PromiseRejectedResult).reason);
      await assert.rejects(other.get('k'), isNewer);
      assert.equal(other.health().healthy, false);
      assert.deepEqual(storeFiles(dir), before);
    } finally {
      await other.close(); // its journal was closed by the reload, which stopped before opening one
    }
  });

  it('a snapshot that cannot be read at a reload: reads fail as unavailable, the poll stays quiet, and it recovers', async () => {
    const dir = await storeWithK();
    const cap = captureLogger();
    const s = open(dir, { log: cap.log, pollMs: 10 });
    try {
      assert.equal(await s.get('k'), 'v');
      const healthySince = s.health().since;
      const journal0 = journalOf(dir);
      appendFileSync(journal0, '{"o":"end"}\n');
      writeFileSync(join(dir, 'state', 'store.snapshot.json'), '{"format":"postern-store", torn');
      writeFileSync(join(dir, 'state', 'store.journal.1.jsonl'), '{"o":"format","v":1}\n');
      rmSync(journal0);
      await sleep(5);
      const err = await s.get('k').then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(err instanceof StoreUnavailableError && !(err instanceof StoreFormatError), String(err));
      assert.match(err.message, /could not be loaded/);
      const down = s.health();
      assert.equal(down.healthy, false);
      assert.ok(down.since > healthySince, 'health().since moves when the files could not be loaded');
      const logged = cap.lines.length;
      await sleep(100); // ten polls
      assert.ok(cap.lines.length - logged <= 1, `the poll logged ${cap.lines.length - logged} lines`);
      writeFileSync(join(dir, 'state', 'store.snapshot.json'), JSON.stringify({ format: 'postern-store', version: 1, gen: 1, strings: [['k', 'repaired', null]], hashes: [] }));
      assert.equal(await s.get('k'), 'repaired');
      await s.set('k2', 'v2');
      const up = s.health();
      assert.equal(up.healthy, true);
      assert.ok(up.since > down.since, 'health().since moves again once they load');
    } finally {
      await s.close();
    }
  });
});
