// CPU time of a process (all threads) and of its main thread, read from /proc (Linux). The bench
// reports them per message: unlike messages/s they stay meaningful when other work shares the
// machine, and the main thread's share shows how close the event loop is to being the limit.
import { readFile } from 'node:fs/promises';

export interface CpuSample {
  processMs: number;
  mainThreadMs: number;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

async function ticks(path: string): Promise<number> {
  const text = await readFile(path, 'utf8');
  // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

export async function cpuSample(pid: number): Promise<CpuSample | null> {
  try {
    const [p, m] = await Promise.all([ticks(`/proc/${pid}/stat`), ticks(`/proc/${pid}/task/${pid}/stat`)]);
    return { processMs: p * TICK_MS, mainThreadMs: m * TICK_MS };
  } catch {
    return null; // not Linux, or the process is gone
  }
}
