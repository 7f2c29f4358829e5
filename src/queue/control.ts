// The queue's control channel for `postern queue` (and other local tools) while the daemon runs:
// request files under `<data_dir>/control/`.
//   daemon.pid       the running daemon's pid (written at start, removed at stop); a tool that
//                    finds no live pid there acts on the spool files itself
//   <n>.req          {"op": "retry"|"delete"|"bounce", "id"?: "...", "domain"?: "..."},
//                    written to <n>.tmp and renamed, so the daemon never reads half of one
//   <n>.res          the daemon's answer {"ok": true, "count"?: n} | {"ok": false, "error": "…"};
//                    the tool reads it and removes it
// The daemon watches control/ and also scans it every second.
//
// Config keys: `data_dir`.
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { logEvent } from '../log/logger.js';

export type ControlRequest = { op: 'retry'; id?: string; domain?: string } | { op: 'delete'; id: string } | { op: 'bounce'; id: string };
export type ControlResponse = { ok: true; count?: number } | { ok: false; error: string };

export function controlDir(dataDir: string): string {
  return join(dataDir, 'control');
}

/** The live daemon's pid, or null when none runs on this data_dir. */
export async function daemonPid(dataDir: string): Promise<number | null> {
  const pid = Number((await readFile(join(controlDir(dataDir), 'daemon.pid'), 'utf8').catch(() => '')).trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
}

/** Sends one request to the running daemon and waits for its answer. */
export async function sendControl(dataDir: string, req: ControlRequest, timeoutMs = 10_000): Promise<ControlResponse> {
  const dir = controlDir(dataDir);
  const n = `${Date.now()}-${randomBytes(6).toString('hex')}`;
  await writeFile(join(dir, `${n}.tmp`), JSON.stringify(req));
  await rename(join(dir, `${n}.tmp`), join(dir, `${n}.req`));
  const end = Date.now() + timeoutMs;
  const res = join(dir, `${n}.res`);
  while (Date.now() < end) {
    const txt = await readFile(res, 'utf8').catch(() => null);
    if (txt !== null) {
      await unlink(res).catch(() => undefined);
      return JSON.parse(txt) as ControlResponse;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await unlink(join(dir, `${n}.req`)).catch(() => undefined);
  return { ok: false, error: 'the daemon did not answer in time' };
}

export class ControlServer {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  private again = false;
  private readonly dir: string;

  constructor(
    private readonly dataDir: string,
    private readonly handle: (req: ControlRequest) => Promise<ControlResponse>,
    private readonly log: Logger,
  ) {
    this.dir = controlDir(dataDir);
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, 'daemon.pid'), `${process.pid}\n`);
    try {
      this.watcher = watch(this.dir, () => void this.scan());
      this.watcher.on('error', () => undefined);
    } catch {
      this.watcher = null;
    }
    this.timer = setInterval(() => void this.scan(), 1000);
    this.timer.unref();
    await this.scan();
  }

  private scan(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = (async () => {
      do {
        this.again = false;
        const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) => n.endsWith('.req')).sort();
        for (const name of names) await this.one(name);
      } while (this.again);
    })().finally(() => (this.busy = null));
    return this.busy;
  }

  private async one(name: string): Promise<void> {
    const p = join(this.dir, name);
    const txt = await readFile(p, 'utf8').catch(() => null);
    if (txt === null) return;
    await unlink(p).catch(() => undefined);
    let res: ControlResponse;
    try {
      const req = JSON.parse(txt) as ControlRequest;
      res = await this.handle(req);
      logEvent(this.log, 'info', 'queue.control', { op: req.op, id: 'id' in req ? req.id : undefined, ok: res.ok });
    } catch (e) {
      res = { ok: false, error: (e as Error).message };
    }
    const base = name.slice(0, -'.req'.length);
    await writeFile(join(this.dir, `${base}.rtmp`), JSON.stringify(res));
    await rename(join(this.dir, `${base}.rtmp`), join(this.dir, `${base}.res`));
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.busy;
    await unlink(join(this.dir, 'daemon.pid')).catch(() => undefined);
  }
}
