// The machine's limit for durable small-file writes: how many 10 KB files per second can be
// written the way a Maildir delivery writes them (tmp/ file, fsync, rename into new/, fsync of
// new/), with `concurrency` writers at once. Each writer fsyncs the directory itself (no group
// commit), so this is the raw figure that the spool and delivery code are compared against.
// Its CPU per file says what the limit is bound by: near (cores / files_per_s), the file system
// work itself fills the cores, and a whole SMTP transaction is measured against that cost.
//
// Used by `npm run bench` (bench/run.ts). Config keys: none.
import { mkdir, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface FsyncLimitOptions {
  dir: string;
  concurrency: number;
  seconds: number;
  /** File size in bytes (default 10240). */
  size?: number;
}

export interface FsyncLimitResult {
  files_per_s: number;
  files: number;
  seconds: number;
  /** CPU time of this process (every thread, user and kernel) per file written. */
  cpu_ms_per_file: number;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function measureFsyncLimit(opts: FsyncLimitOptions): Promise<FsyncLimitResult> {
  const tmp = join(opts.dir, 'tmp');
  const fresh = join(opts.dir, 'new');
  await mkdir(tmp, { recursive: true });
  await mkdir(fresh, { recursive: true });
  const body = randomBytes(opts.size ?? 10240);
  const deadline = performance.now() + opts.seconds * 1000;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  let files = 0;
  let seq = 0;
  const worker = async (w: number) => {
    while (performance.now() < deadline) {
      const name = `${Date.now()}.W${w}Q${seq++}.bench`;
      const fh = await open(join(tmp, name), 'w');
      try {
        await fh.write(body, 0, body.length, 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(join(tmp, name), join(fresh, name));
      await fsyncDir(fresh);
      files++;
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, w) => worker(w)));
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { files_per_s: files / seconds, files, seconds, cpu_ms_per_file: (cpu.user + cpu.system) / 1000 / Math.max(1, files) };
}
