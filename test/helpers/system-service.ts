// Shared plumbing for tests that run real Debian servers (Postfix, Dovecot) as private instances:
// checking that the programs are installed (a clear "install X" failure, never a skip), a free
// loopback port, a temp dir the servers' own users can enter, waiting for a listener, and
// finding the processes an instance left behind so that a test stops every one of them.
import { spawn, type ChildProcess } from 'node:child_process';
import { access, chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { constants } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Fails (never skips) when a program is missing, naming the Debian package that brings it. */
export async function requireExecutables(what: string, paths: string[], debianPackages: string[]): Promise<void> {
  const missing: string[] = [];
  for (const p of paths) {
    try {
      await access(p, constants.X_OK);
    } catch {
      missing.push(p);
    }
  }
  if (missing.length) {
    throw new Error(`${what} is not installed (missing ${missing.join(', ')}): install it with \`apt-get install -y ${debianPackages.join(' ')}\` (as .ci/run does)`);
  }
}

/** Postfix and Dovecot start as root and drop privileges to their own users. */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${what} must be started as root (it switches to its own users); run the test as root, as .ci/run does`);
}

/** A port nobody listens on right now (bind to 0, read it, close). */
export async function freeLoopbackPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** Resolves once something accepts connections on host:port, or throws after `ms`. */
export async function waitForListener(port: number, host = '127.0.0.1', ms = 15_000, describe = `${host}:${port}`): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ port, host });
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${describe} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A temp dir that a server's unprivileged users (postfix, dovecot, nobody) can enter: mkdtemp
 * makes it 0700, which would stop them at the door.
 */
export async function makeServiceDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

export async function removeServiceDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits up to `ms` for every pid to be gone; returns those still alive. */
export async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  let left = pids.filter(isAlive);
  while (left.length && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    left = left.filter(isAlive);
  }
  return left;
}

/**
 * Pids of processes whose command line or environment contains `marker` (a path or name unique
 * to one test instance, such as its temp dir): what is left of that instance after its master
 * process stopped. Never matches this test process itself.
 */
export async function pidsMarkedBy(marker: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const [cmd, env] = await Promise.all([
      readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => ''),
      readFile(`/proc/${pid}/environ`, 'latin1').catch(() => ''),
    ]);
    if (cmd.includes(marker) || env.split('\0').some((e) => e.includes(marker))) out.push(pid);
  }
  return out;
}

/** SIGKILLs what an instance left behind (found by its unique marker), then waits for it. */
export async function killLeftovers(marker: string): Promise<number[]> {
  const left = await pidsMarkedBy(marker);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await waitGone(left, 5_000);
  return left;
}

/** A daemon run in the foreground as the test's child: started (again) and stopped at will. */
export interface SupervisedDaemon {
  /** Starts it again, with the same config, ports and folder. */
  start(): Promise<void>;
  /** Stops it (SIGTERM) and waits; the folder stays, so start() can bring it back. */
  stop(): Promise<void>;
  /** Stops it and removes its folder. */
  close(): Promise<void>;
}

/** A scanner daemon (clamd, spamd) listening on a loopback port and a unix socket in `dir`. */
export interface ScannerDaemon extends SupervisedDaemon {
  port: number;
  socket: string;
  dir: string;
}

/**
 * Starts `command args` and resolves once `ready(alive)` does (it should poll while `alive.v`);
 * fails with the daemon's output if it exits first. A failed first start stops the process and
 * removes `dir` before rethrowing.
 */
export async function superviseDaemon(o: {
  name: string;
  command: string;
  args: string[];
  dir: string;
  ready: (alive: { v: boolean }) => Promise<void>;
  /**
   * Run it as the leader of its own process group and signal the whole group: for daemons whose
   * workers outlive their master and rename themselves (rspamd), so no marker finds them.
   */
  group?: boolean;
}): Promise<SupervisedDaemon> {
  let proc: ChildProcess | null = null;
  const start = async () => {
    let output = '';
    const p = spawn(o.command, o.args, { stdio: ['ignore', 'pipe', 'pipe'], detached: o.group === true });
    proc = p;
    p.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    p.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const alive = { v: true };
    const exited = new Promise<never>((_, reject) => {
      p.once('exit', (code) => {
        alive.v = false;
        reject(new Error(`${o.name} exited (${code}) before it was ready:\n${output}`));
      });
      p.once('error', (e) => {
        alive.v = false;
        reject(e);
      });
    });
    await Promise.race([o.ready(alive), exited]);
  };
  const stop = async () => {
    const p = proc;
    proc = null;
    if (!p) return;
    if (p.exitCode === null && p.signalCode === null) {
      const gone = new Promise<void>((r) => p.once('exit', () => r()));
      if (o.group && p.pid) signalGroup(p.pid, 'SIGTERM');
      else p.kill('SIGTERM');
      await gone;
    }
    // Workers the master did not take down with it (or left when it died first) go too.
    if (o.group && p.pid) await sweepGroup(p.pid);
  };
  const close = async () => {
    await stop();
    await rm(o.dir, { recursive: true, force: true });
  };
  await start().catch(async (e: unknown) => {
    await close();
    throw e;
  });
  return { start, stop, close };
}

function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // ESRCH: nobody is left in the group
  }
}

/** Waits up to 5 s for the process group to empty, then SIGKILLs whatever is left and waits. */
async function sweepGroup(pgid: number): Promise<void> {
  const emptyWithin = async (ms: number) => {
    const end = Date.now() + ms;
    while (signalGroup(pgid, 0)) {
      if (Date.now() > end) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return true;
  };
  if (await emptyWithin(5_000)) return;
  signalGroup(pgid, 'SIGKILL');
  await emptyWithin(5_000);
}
