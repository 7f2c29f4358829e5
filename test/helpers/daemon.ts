// Starts `postern start` as a child process with an inline YAML config, every listener on port 0,
// and reads the real ports from its `daemon.ready` log line. Tests call `stop()` (SIGTERM) or
// `kill()` (SIGKILL, for crash tests); both wait for the process to exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { runCommand, type CommandResult } from './run-command.js';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const CLI = join(REPO, 'src', 'cli.ts');
/** The installed entry point, which runs the build in dist/. */
export const BIN = join(REPO, 'bin', 'postern.cjs');
/** tsx's loader by URL: a bare `--import tsx` resolves from the child's cwd, a temp dir here. */
export const TSX = import.meta.resolve('tsx');

export interface RunningDaemon {
  dir: string;
  dataDir: string;
  configFile: string;
  ports: Record<string, number>;
  proc: ChildProcess;
  /** Every stdout log line parsed so far. */
  logs: Record<string, unknown>[];
  stderr: () => string;
  stop(): Promise<number | null>;
  kill(): Promise<void>;
  /** Runs `postern <args>` against the same config, returns exit code and output. */
  cli(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** Runs the CLI once (not the daemon). */
export function runCli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CommandResult> {
  return runCommand(process.execPath, ['--import', TSX, CLI, ...args], { input: opts.input, cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env } });
}

/**
 * `config` is merged over a test default: every listener on 127.0.0.1 port 0, data under a temp
 * dir, local domain example.test. Pass `dir` to restart a daemon on the same data (crash tests).
 * `timeoutMs` (default 60 s) bounds the wait for `daemon.ready`: a start takes about 2 s, but
 * several times that on a machine whose two cores are busy with other test files.
 */
export async function startDaemon(config: Record<string, unknown> = {}, opts: { dir?: string; timeoutMs?: number } = {}): Promise<RunningDaemon> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'postern-e2e-')));
  const listen = Object.fromEntries(['smtp', 'submission', 'smtps', 'lmtp'].map((n) => [n, { host: '127.0.0.1', port: 0 }]));
  const full = {
    hostname: 'mx.example.test',
    data_dir: './data',
    listen,
    domains: { local: ['example.test'] },
    log: { level: 'info' },
    ...config,
  };
  const configFile = join(dir, 'postern.yaml');
  await writeFile(configFile, stringify(full));
  // POSTERN_DAEMON_NODE_ARGS passes node flags to the daemon only, e.g. `--cpu-prof` when
  // profiling a benchmark (node refuses --cpu-prof in NODE_OPTIONS).
  const nodeArgs = process.env.POSTERN_DAEMON_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? [];
  // POSTERN_DAEMON_BUILT=1 runs the compiled daemon (bin/postern.cjs → dist/, as `npm start`
  // does) instead of the sources through tsx; the benchmarks use it, after building.
  const entry = process.env.POSTERN_DAEMON_BUILT === '1' ? [BIN] : ['--import', TSX, CLI];
  const proc = spawn(process.execPath, [...nodeArgs, ...entry, 'start', '--config', configFile], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    // As bin/postern.cjs sets it: tsx loads the CLI as ES modules, which start the pool first.
    env: { UV_THREADPOOL_SIZE: '16', ...process.env },
  });
  const logs: Record<string, unknown>[] = [];
  let err = '';
  let buf = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = new Promise<Record<string, number>>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`daemon not ready in time; stderr: ${err}`)), opts.timeoutMs ?? 60_000);
    proc.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          if (rec.evt === 'daemon.ready') {
            clearTimeout(timer);
            res(rec.ports as Record<string, number>);
          }
        } catch {
          /* not a log line */
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`daemon exited with ${code} before ready; stderr: ${err}`));
    });
  });
  let ports: Record<string, number>;
  try {
    ports = await ready;
  } catch (e) {
    // Never leave a daemon behind when it did not come up in time.
    proc.kill('SIGKILL');
    throw e;
  }
  return {
    dir,
    dataDir: join(dir, 'data'),
    configFile,
    ports,
    proc,
    logs,
    stderr: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
    cli: (args, input) => runCli([...args, '--config', configFile], { input, cwd: dir }),
  };
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
