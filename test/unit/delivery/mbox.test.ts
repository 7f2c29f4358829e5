import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, stat, utimes, writeFile, appendFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import fc from 'fast-check';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { MboxWriter, asctime, mboxEntry, mboxrdQuote, mboxrdUnquote, type MboxIntent } from '../../../src/delivery/mbox.js';
import { DeliveryError } from '../../../src/delivery/errors.js';
import { tempDir } from '../queue/helpers.js';
import { readWithPython } from './python.js';

const CHILD = fileURLToPath(new URL('./mbox-child.ts', import.meta.url));
const T = Date.UTC(2024, 0, 4, 5, 6, 7);

test('asctime and the From line', () => {
  assert.equal(asctime(T), 'Thu Jan  4 05:06:07 2024');
  assert.equal(asctime(Date.UTC(2023, 11, 25, 23, 0, 0)), 'Mon Dec 25 23:00:00 2023');
  assert.equal(mboxEntry('', T, Buffer.from('a\n')).toString(), 'From MAILER-DAEMON Thu Jan  4 05:06:07 2024\na\n\n');
  assert.equal(mboxEntry('a@example.net', T, Buffer.from('a')).toString(), 'From a@example.net Thu Jan  4 05:06:07 2024\na\n\n');
  assert.equal(mboxEntry('"x y"@example.net', T, Buffer.from('')).toString().split('\n')[0], 'From "x_y"@example.net Thu Jan  4 05:06:07 2024');
});

test('mboxrd quoting is reversible on any text', () => {
  assert.equal(mboxrdQuote(Buffer.from('From x\n>From y\n>>From z\nFromage\n From a\n')).toString(), '>From x\n>>From y\n>>>From z\nFromage\n From a\n');
  fc.assert(
    fc.property(fc.array(fc.constantFrom('From ', '>', '\n', '\r', 'x', 'From', ' ', '\xe9')), (parts) => {
      const b = Buffer.from(parts.join(''), 'latin1');
      const q = mboxrdQuote(b);
      assert.ok(!/(^|\n)From /.test(q.toString('latin1')), 'no unquoted From line');
      assert.ok(mboxrdUnquote(q).equals(b));
    }),
  );
});

const TRICKY = [
  'Subject: one\n\nFrom the beginning\n>From quoted\n>>From twice\nplain\n',
  'Subject: two\n\nno trailing newline',
  'Subject: three\n\n\nFrom \n\n',
  'Subject: four\n\nFrom x\nFrom y\n',
  'Subject: 8bit\n\nk\xf6nnen\n',
  // A bare CR is not a line end: the From after it is not quoted (readers would keep the '>').
  'Subject: cr\n\nline one\rFrom here\n',
];

test('Python reads every tricky message back exactly (plus the newline mbox needs)', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const w = new MboxWriter(new DirSyncer());
    const path = join(dir, 'mail', 'alice');
    for (const [i, body] of TRICKY.entries()) {
      const r = await w.deliver(path, undefined, mboxEntry(i === 0 ? '' : 'a@example.net', T, Buffer.from(body, 'latin1')));
      assert.equal(r.duplicate, false);
    }
    const py = readWithPython('mbox', path);
    assert.equal(py.length, TRICKY.length);
    for (const [i, body] of TRICKY.entries()) {
      const want = body.endsWith('\n') ? body : `${body}\n`;
      assert.equal(py[i]!.bytes.toString('latin1'), want, `message ${i}`);
    }
    assert.equal(py[0]!.from, 'MAILER-DAEMON Thu Jan  4 05:06:07 2024');
    // Sub-folders live in "<mbox>.d/".
    const f = await w.deliver(path, 'Archive/2024', mboxEntry('a@example.net', T, Buffer.from('Subject: f\n\n')));
    assert.equal(f.path, join(dir, 'mail', 'alice.d', 'Archive.2024'));
    await assert.rejects(w.deliver(path, '../x', mboxEntry('', T, Buffer.from('x'))), (e: unknown) => e instanceof DeliveryError && !e.temporary);
  } finally {
    await cleanup();
  }
});

function counts(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) if (line.startsWith('Subject: ')) m.set(line, (m.get(line) ?? 0) + 1);
  return m;
}

test('parallel appends in one process and from other processes never interleave', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const w = new MboxWriter(new DirSyncer());
    const runChild = (tag: string) =>
      new Promise<string>((resolve, reject) => {
        const c = spawn(process.execPath, ['--import', 'tsx', CHILD, path, '15', tag, '3000'], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.on('error', reject);
        c.on('exit', () => resolve(out));
      });
    const children = [runChild('c1'), runChild('c2')];
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => w.deliver(path, undefined, mboxEntry('p@example.net', T, Buffer.from(`Subject: p ${i}\n\nFrom here\n${'y'.repeat(5000)}\nend p ${i}\n`)))),
    );
    const outs = await Promise.all(children);
    for (const o of outs) assert.equal(o.trim().split('\n').filter((l) => l.startsWith('ok')).length, 15, o);
    const py = readWithPython('mbox', path);
    assert.equal(py.length, 70);
    for (const m of py) {
      const s = m.bytes.toString();
      const subj = /^Subject: (\S+) (\d+)$/m.exec(s)!;
      // Each message holds its own body whole: its start, its filler and its own end line.
      assert.ok(s.endsWith(`end ${subj[1]} ${subj[2]}\n`), s.slice(0, 80));
      assert.match(s, /\n(From here|From the start)\n/);
    }
    const c = counts(await readFile(path, 'utf8'));
    assert.equal(c.size, 70);
    assert.ok([...c.values()].every((n) => n === 1));
  } finally {
    await cleanup();
  }
});

test('a failed write is truncated away (file size limit in a child)', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    await writeFile(path, 'From a@b Thu Jan  4 05:06:07 2024\nSubject: old\n\nold\n\n');
    const before = (await stat(path)).size;
    // ulimit -f counts 1024-byte blocks; the 20 KB message cannot fit under 8 KB.
    const r = spawnSync('bash', ['-c', `ulimit -f 8; exec "${process.execPath}" --import tsx "${CHILD}" "${path}" 1 big 20000`], { encoding: 'utf8' });
    assert.match(r.stdout, /^err 45\d 4\./, r.stdout + r.stderr);
    assert.equal((await stat(path)).size, before);
    assert.equal(readWithPython('mbox', path).length, 1);
  } finally {
    await cleanup();
  }
});

test('intent: a retry sees its own entry, and repairs a torn one', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const w = new MboxWriter(new DirSyncer());
    let saved: MboxIntent | null = null;
    const intent = { get: async () => saved, put: async (v: MboxIntent) => void (saved = v) };
    await w.deliver(path, undefined, mboxEntry('', T, Buffer.from('Subject: first\n\n')));
    const entry = mboxEntry('a@example.net', T, Buffer.from('Subject: mine\n\nbody\n'));
    const r1 = await w.deliver(path, undefined, entry, { intent });
    assert.equal(r1.duplicate, false);
    assert.deepEqual(saved, { offset: r1.offset, length: entry.length });
    const r2 = await w.deliver(path, undefined, entry, { intent, checkExisting: true });
    assert.equal(r2.duplicate, true);
    assert.equal(readWithPython('mbox', path).length, 2);

    // Simulate a crash mid-append: our intent recorded, half the entry on disk.
    const path2 = join(dir, 'box2');
    await w.deliver(path2, undefined, mboxEntry('', T, Buffer.from('Subject: first\n\n')));
    const off = (await stat(path2)).size;
    saved = { offset: off, length: entry.length };
    await appendFile(path2, entry.subarray(0, 17));
    const r3 = await w.deliver(path2, undefined, entry, { intent, checkExisting: true });
    assert.deepEqual([r3.duplicate, r3.offset], [false, off]);
    const py = readWithPython('mbox', path2);
    assert.deepEqual(py.map((m) => m.bytes.toString()), ['Subject: first\n\n', 'Subject: mine\n\nbody\n']);
  } finally {
    await cleanup();
  }
});

test('takeBack cuts off an entry only while the file still ends with exactly it', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const w = new MboxWriter(new DirSyncer());
    const path = join(dir, 'box');
    await w.deliver(path, undefined, mboxEntry('', T, Buffer.from('Subject: first\n\n')));
    const before = await readFile(path);
    const mine = mboxEntry('a@example.net', T, Buffer.from('Subject: mine\n\nbody\n'));
    const r = await w.deliver(path, undefined, mine);
    assert.equal(await w.takeBack(path, r.offset, mine), 'removed');
    assert.ok((await readFile(path)).equals(before), 'the file is as it was before the append');
    assert.deepEqual(readWithPython('mbox', path).map((m) => m.bytes.toString()), ['Subject: first\n\n']);

    // Another entry after ours: ours stays, and so does theirs.
    const again = await w.deliver(path, undefined, mine);
    await w.deliver(path, undefined, mboxEntry('b@example.net', T, Buffer.from('Subject: theirs\n\n')));
    const full = await readFile(path);
    assert.equal(await w.takeBack(path, again.offset, mine), 'changed');
    assert.ok((await readFile(path)).equals(full));

    // The same length at the end, other bytes (a reader rewrote the mailbox): left alone.
    const path2 = join(dir, 'box2');
    const r2 = await w.deliver(path2, undefined, mine);
    const other = Buffer.from(mine);
    other[other.length - 3] = 0x58;
    await writeFile(path2, other);
    assert.equal(await w.takeBack(path2, r2.offset, mine), 'changed');
    assert.ok((await readFile(path2)).equals(other));

    // The entry that made the file: the file stays, empty (an empty mbox).
    const path3 = join(dir, 'box3');
    const r3 = await w.deliver(path3, undefined, mine);
    assert.equal(r3.offset, 0);
    assert.equal(await w.takeBack(path3, 0, mine), 'removed');
    assert.equal((await stat(path3)).size, 0);
    assert.deepEqual(readWithPython('mbox', path3), []);

    assert.equal(await w.takeBack(join(dir, 'gone'), 0, mine), 'absent');
    await assert.rejects(stat(join(dir, 'gone')), /ENOENT/, 'not created just to be looked at');
    assert.equal(await w.takeBack(join(dir, 'no-folder', 'box'), 0, mine), 'absent');
    await assert.rejects(stat(join(dir, 'no-folder')), /ENOENT/, 'nor is its folder');
  } finally {
    await cleanup();
  }
});

test('dotlocks: a stale or dead holder is broken, a live one makes delivery wait then fail', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const path = join(dir, 'box');
    const w = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 300, staleLockMs: 60_000 });
    // Held by a live process (our parent shell's pid is alive; use our own parent).
    await writeFile(`${path}.lock`, `${process.ppid}\n`);
    await assert.rejects(w.deliver(path, undefined, mboxEntry('', T, Buffer.from('x\n'))), (e: unknown) => e instanceof DeliveryError && e.temporary && e.enhanced === '4.2.0');
    // Old enough to be stale.
    const old = new Date(Date.now() - 120_000);
    await utimes(`${path}.lock`, old, old);
    await w.deliver(path, undefined, mboxEntry('', T, Buffer.from('x\n')));
    // Left by a process that no longer runs.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    await writeFile(`${path}.lock`, `${dead}\n`);
    await w.deliver(path, undefined, mboxEntry('', T, Buffer.from('y\n')));
    // Left by an earlier process with our own pid (a container's pid 1 after a restart): not
    // held by us, so stale at once, not after staleLockMs.
    await writeFile(`${path}.lock`, `${process.pid}\n`);
    await w.deliver(path, undefined, mboxEntry('', T, Buffer.from('z\n')));
    assert.equal(readWithPython('mbox', path).length, 3);
    await assert.rejects(stat(`${path}.lock`), /ENOENT/);
  } finally {
    await cleanup();
  }
});

test('an mbox folder named like another folder\'s dotlock ("A.lock") is refused for good; folder A still works', async () => {
  const t = await tempDir('postern-mbox-lockname-');
  try {
    const w = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 1000 });
    const path = join(t.dir, 'alice');
    const entry = mboxEntry('a@example.net', Date.now(), Buffer.from('Subject: x\n\nbody\n'));
    for (const bad of ['A.lock', 'A/lock', 'A/LOCK']) await assert.rejects(w.deliver(path, bad, entry), (e: unknown) => e instanceof DeliveryError && !e.temporary, bad);
    await w.deliver(path, 'A', entry);
    assert.equal(readWithPython('mbox', w.folderPath(path, 'A')).length, 1);
  } finally {
    await t.cleanup();
  }
});
