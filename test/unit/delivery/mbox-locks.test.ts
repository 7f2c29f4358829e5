// mbox locking against other programs, each played by a Python process: an fcntl(2) record lock
// (Python's fcntl.lockf, the lock Dovecot, Postfix local(8) and procmail take) makes a delivery
// wait and then time out; the lock Postern holds while appending stops them; and a writer that
// judges a dotlock stale never removes the fresh lock another writer made after breaking it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { MboxWriter, mboxEntry } from '../../../src/delivery/mbox.js';
import { DeliveryError } from '../../../src/delivery/errors.js';
import { python } from '../../helpers/python.js';
import { tempDir } from '../queue/helpers.js';
import { readWithPython } from './python.js';

const T = Date.UTC(2024, 0, 4, 5, 6, 7);
const OLD = 'From old@example.net Thu Jan  4 05:06:07 2024\nSubject: old\n\nold\n\n';
/** An mbox holding one old message, in a temp folder of its own. */
async function mboxWithOld(): Promise<{ dir: string; path: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tempDir('postern-mbox-fcntl-');
  const path = join(dir, 'box');
  await writeFile(path, OLD);
  return { dir, path, cleanup };
}
const entry = (tag: string) => mboxEntry('a@example.net', T, Buffer.from(`Subject: ${tag}\n\nbody ${tag}\n`));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const isLocked = (e: unknown) => e instanceof DeliveryError && e.temporary && e.enhanced === '4.2.0';

/** A Python process run line by line: `line()` is its next output line, `send` writes a line to it. */
class PythonPeer {
  private readonly lines: string[] = [];
  private readonly waiting: ((l: string) => void)[] = [];
  private readonly exited: Promise<void>;

  constructor(private readonly p: ChildProcessWithoutNullStreams) {
    createInterface({ input: p.stdout }).on('line', (l) => {
      const w = this.waiting.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    this.exited = new Promise((res) => p.on('close', () => res()));
    void this.exited.then(() => {
      for (const w of this.waiting.splice(0)) w(`exited: ${err}`);
    });
  }

  static start(script: string, args: string[]): PythonPeer {
    return new PythonPeer(spawn('python3', ['-c', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  line(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.p.exitCode !== null || this.p.signalCode !== null) return Promise.resolve('exited');
    return new Promise((res) => this.waiting.push(res));
  }

  send(text: string): void {
    this.p.stdin.write(`${text}\n`);
  }

  /** Kills it if it still runs; resolves once it is gone. */
  async stop(): Promise<void> {
    if (this.p.exitCode === null && this.p.signalCode === null) this.p.kill('SIGKILL');
    await this.exited;
  }
}

/** Holds fcntl.lockf(LOCK_EX) on the file until a line arrives, then says how big the file was at that moment. */
const HOLD_LOCKF = `
import fcntl, os, sys
f = open(sys.argv[1], 'rb+')
fcntl.lockf(f, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.readline()
print('size', os.fstat(f.fileno()).st_size, flush=True)
fcntl.lockf(f, fcntl.LOCK_UN)
f.close()
`;

/** Which of the locks other mbox writers use are held on the file by another process, now. */
const PROBE = `
import fcntl, os, sys
path = sys.argv[1]
held = []
f = open(path, 'rb+')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    held.append('fcntl')
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    held.append('flock')
if os.path.exists(path + '.lock'):
    held.append('dotlock')
print(' '.join(held) or 'none')
`;
const probe = async (path: string) => (await python(PROBE, [path])).trim();

/** Polls until `ok` holds (at most 5 s). */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await sleep(10);
}

test('an fcntl record lock held by another process makes delivery wait; it appends once the lock goes', async () => {
  const { path, cleanup } = await mboxWithOld();
  const holder = PythonPeer.start(HOLD_LOCKF, [path]);
  try {
    assert.equal(await holder.line(), 'locked');
    const w = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 20_000 });
    let state = 'waiting';
    const delivery = w.deliver(path, undefined, entry('mine'));
    delivery.then(() => (state = 'appended'), () => (state = 'failed'));
    // The dotlock is ours once it appears; the delivery must then stop at the fcntl lock.
    await until(() => state !== 'waiting' || existsSync(`${path}.lock`));
    await sleep(300);
    assert.equal(state, 'waiting');
    holder.send('release');
    // Nothing was appended while the lock was held.
    assert.equal(await holder.line(), `size ${OLD.length}`);
    const r = await delivery;
    assert.equal(r.offset, OLD.length);
    assert.deepEqual(readWithPython('mbox', path).map((m) => m.bytes.toString()), ['Subject: old\n\nold\n', 'Subject: mine\n\nbody mine\n']);
  } finally {
    await holder.stop();
    await cleanup();
  }
});

test('an fcntl record lock held past the timeout: a temporary failure, the file unchanged, our locks gone', async () => {
  const { path, cleanup } = await mboxWithOld();
  const holder = PythonPeer.start(HOLD_LOCKF, [path]);
  try {
    assert.equal(await holder.line(), 'locked');
    const w = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 400 });
    await assert.rejects(w.deliver(path, undefined, entry('late')), isLocked);
    assert.equal(await readFile(path, 'utf8'), OLD);
    // The dotlock is removed and the flock dropped; the fcntl lock is still only Python's.
    await assert.rejects(stat(`${path}.lock`), /ENOENT/);
    assert.equal(await probe(path), 'fcntl');
    holder.send('release');
    assert.equal(await holder.line(), `size ${OLD.length}`);
    await w.deliver(path, undefined, entry('late'));
    assert.equal(readWithPython('mbox', path).length, 2);
  } finally {
    await holder.stop();
    await cleanup();
  }
});

test('while it appends, Postern holds the dotlock, flock and an fcntl write lock; none is left after success or failure', async () => {
  const { path, cleanup } = await mboxWithOld();
  try {
    const w = new MboxWriter(new DirSyncer());
    // The intent store is called with every lock taken, just before the append is written.
    const seen: string[] = [];
    const intent = { get: async () => null, put: async () => void seen.push(await probe(path)) };
    await w.deliver(path, undefined, entry('one'), { intent });
    assert.deepEqual(seen, ['fcntl flock dotlock']);
    assert.equal(await probe(path), 'none');

    const failing = { get: async () => null, put: async () => Promise.reject(new Error('intent store down')) };
    await assert.rejects(w.deliver(path, undefined, entry('two'), { intent: failing }), DeliveryError);
    assert.equal(await probe(path), 'none');
    assert.equal(readWithPython('mbox', path).length, 2);
  } finally {
    await cleanup();
  }
});

/**
 * Writer A: it judged the dotlock stale as well, removed it and made its own; it holds that lock
 * until a line arrives, then appends, and says whether the lock file was still its own.
 */
const WRITER_A = `
import os, sys
lock, box = sys.argv[1], sys.argv[2]
os.unlink(lock)
fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b'%d\\n' % os.getpid())
os.close(fd)
mine = os.stat(lock).st_ino
print('locked', flush=True)
sys.stdin.readline()
try:
    still = os.stat(lock).st_ino == mine and open(lock).read() == '%d\\n' % os.getpid()
except FileNotFoundError:
    still = False
with open(box, 'ab') as f:
    f.write(b'From a@example.net Thu Jan  4 05:06:07 2024\\nSubject: A\\n\\nfrom A\\n\\n')
if still:
    os.unlink(lock)
print('mine' if still else 'lost', flush=True)
`;

test('two writers judging one dotlock stale: the slower one leaves the fresh lock of the faster one alone', { timeout: 30_000 }, async () => {
  const { dir, cleanup } = await tempDir('postern-mbox-stale-');
  const path = join(dir, 'box');
  const lock = `${path}.lock`;
  await writeFile(path, OLD);
  // The stale lock is a FIFO: reading it (to learn the holder's pid) blocks until the test writes
  // to it, which stops writer B between judging the lock and acting on the judgement.
  assert.equal(spawnSync('mkfifo', [lock]).status, 0);
  const deadPid = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  let writerA: PythonPeer | undefined;
  try {
    const b = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 1500 });
    const delivery = b.deliver(path, undefined, entry('B'));
    const outcome = delivery.then(() => 'appended', (e: unknown) => (isLocked(e) ? 'locked' : e));
    // Opening the FIFO for writing returns once B has it open for reading: B is judging it.
    const fifo = await open(lock, 'w');
    try {
      writerA = PythonPeer.start(WRITER_A, [lock, path]);
      assert.equal(await writerA.line(), 'locked');
      await fifo.writeFile(`${deadPid}\n`);
    } finally {
      await fifo.close();
    }
    // B has read a dead pid, but the file now at the name is A's fresh lock: B leaves it, waits
    // for A and gives up at its timeout.
    assert.equal(await outcome, 'locked');
    writerA.send('go');
    assert.equal(await writerA.line(), 'mine');
    await b.deliver(path, undefined, entry('B'));
    assert.deepEqual(
      readWithPython('mbox', path).map((m) => m.bytes.toString()),
      ['Subject: old\n\nold\n', 'Subject: A\n\nfrom A\n', 'Subject: B\n\nbody B\n'],
    );
  } finally {
    await writerA?.stop();
    await cleanup();
  }
});

test('appends of two MboxWriters of one process to one file queue behind each other, as those of one writer do', async () => {
  const { dir, cleanup } = await tempDir('postern-mbox-queue-');
  const path = join(dir, 'box');
  try {
    // fcntl locks are the process's: the second writer must not even start on the file (its
    // lock wait would begin, and time out) while the first one holds it.
    const first = new MboxWriter(new DirSyncer());
    const second = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 200 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const held = first.deliver(path, undefined, entry('first'), { intent: { get: async () => null, put: () => gate } });
    await until(() => existsSync(`${path}.lock`));
    const queued = second.deliver(path, undefined, entry('second')).then(() => 'appended', (e: unknown) => e);
    await sleep(400);
    release();
    await held;
    assert.equal(await queued, 'appended');
    assert.deepEqual(readWithPython('mbox', path).map((m) => m.bytes.toString()), ['Subject: first\n\nbody first\n', 'Subject: second\n\nbody second\n']);
  } finally {
    await cleanup();
  }
});
