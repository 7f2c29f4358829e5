// Crash safety: SIGKILL a process that is accepting and delivering, recover, and check that
// every acknowledged message is in each of its mailboxes exactly once, and nothing twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createMessageQueue } from '../../../src/queue/manager.js';
import { silentLogger } from '../../../src/log/logger.js';
import { FakeDirectory } from './fake-directory.js';
import { tempDir, testConfig } from './helpers.js';
import { readWithPython } from '../delivery/python.js';

const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url));
const USERS = Array.from({ length: 4 }, (_, i) => `u${i}@example.test`);

function expectedRcpts(n: number): string[] {
  return [`u${n % 4}`, ...(n % 3 === 0 ? [`u${(n + 1) % 4}`] : [])];
}

async function runAndKill(dataDir: string, format: string, killAfterAcks: number, first: number): Promise<Set<number>> {
  const acked = new Set<number>();
  await new Promise<void>((resolve, reject) => {
    const c = spawn(process.execPath, ['--import', 'tsx', CHILD, dataDir, format, '8', String(first)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let killed = false;
    c.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (l.startsWith('ACK ')) acked.add(Number(l.slice(4)));
      if (!killed && acked.size >= killAfterAcks) {
        killed = true;
        c.kill('SIGKILL');
      }
    });
    c.on('error', reject);
    c.on('exit', (_code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited without being killed (${_code})`))));
  });
  return acked;
}

async function recover(dataDir: string, format: string): Promise<void> {
  const config = testConfig(dataDir, { mailbox: { format, path: format === 'mbox' ? '{data_dir}/mbox/{local}' : '{data_dir}/mail/{local}' } });
  const q = createMessageQueue({ config, log: silentLogger(), directory: new FakeDirectory(['example.test'], USERS) });
  await q.start();
  await q.idle();
  await q.stop();
}

async function mailboxSeqs(dataDir: string, format: string, user: string): Promise<number[]> {
  const seqs: number[] = [];
  if (format === 'mbox') {
    for (const m of readWithPython('mbox', join(dataDir, 'mbox', user))) {
      const s = m.bytes.toString();
      const n = Number(/^X-Seq: (\d+)$/m.exec(s)![1]);
      // Whole, untorn: it ends with its own end line.
      assert.ok(s.endsWith(`end ${n}\n`), `torn message ${n}`);
      seqs.push(n);
    }
    return seqs;
  }
  const root = join(dataDir, 'mail', user);
  for (const sub of ['new', 'cur']) {
    for (const f of await readdir(join(root, sub)).catch(() => [] as string[])) {
      const s = await readFile(join(root, sub, f), 'utf8');
      const n = Number(/^X-Seq: (\d+)$/m.exec(s)![1]);
      assert.ok(s.endsWith(`end ${n}\n`), `torn message ${n}`);
      seqs.push(n);
    }
  }
  return seqs;
}

for (const format of ['maildir', 'mbox']) {
  test(`SIGKILL while accepting and delivering (${format}): every 250 delivered exactly once`, async () => {
    const { dir, cleanup } = await tempDir('postern-crash-');
    try {
      const acked = new Set<number>();
      // Two crashes in a row: the second child also resumes what the first left (its start()),
      // so it is killed in the middle of recovery deliveries as well. Then a clean recovery.
      for (const [round, kill] of [150, 120].entries()) {
        for (const n of await runAndKill(dir, format, kill, round * 1_000_000)) acked.add(n);
      }
      await recover(dir, format);
      const per = new Map<string, number[]>();
      for (let u = 0; u < 4; u++) per.set(`u${u}`, await mailboxSeqs(dir, format, `u${u}`));
      for (const n of acked) {
        for (const u of expectedRcpts(n)) {
          const copies = per.get(u)!.filter((x) => x === n).length;
          assert.equal(copies, 1, `message ${n} in ${u}: ${copies} copies`);
        }
      }
      // Messages without an ACK may or may not have made it (killed between fsync and ACK), but
      // never twice, and only to their own recipients.
      for (const [u, seqs] of per) {
        assert.equal(new Set(seqs).size, seqs.length, `duplicates in ${u}`);
        for (const n of seqs) assert.ok(expectedRcpts(n).includes(u), `message ${n} misdelivered to ${u}`);
      }
      assert.deepEqual(await readdir(join(dir, 'spool', 'q')), []);
      assert.deepEqual(await readdir(join(dir, 'spool', 'tmp')), []);
    } finally {
      await cleanup();
    }
  });
}
