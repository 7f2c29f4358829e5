// A private redis-server for tests that take Redis away: started on a free loopback port with no
// persistence (`--save "" --appendonly no`), killed (SIGKILL, as a crash) and started again on
// the same port. Tests that only need a Redis use REDIS_URL instead.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './ports.js';

export interface RunningRedis {
  port: number;
  url: string;
  /** SIGKILL, and wait until the port refuses connections. */
  kill(): Promise<void>;
  /** Start again on the same port (empty: nothing was persisted); nothing when it runs. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: connections stay open but nothing answers (a network black hole). */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}


/** Resolves when a TCP connection to the port gets `+PONG`; rejects after `ms`. */
async function waitForPong(port: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1');
      let buf = '';
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (c) => {
        buf += c.toString();
        if (buf.includes('\r\n')) {
          s.destroy();
          res(buf.startsWith('+PONG'));
        }
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`redis-server on port ${port} did not answer PING`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRedisServer(): Promise<RunningRedis> {
  const port = await freePort();
  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const start = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) return; // running
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    proc = p;
    exited = new Promise<void>((r) => p.on('exit', () => r()));
    await waitForPong(port);
  };
  const kill = async () => {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGKILL');
    await exited;
  };
  await start();
  const signal = (sig: NodeJS.Signals) => {
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill(sig);
  };
  const stop = async () => {
    signal('SIGCONT');
    await kill();
  };
  return { port, url: `redis://127.0.0.1:${port}`, kill, start, pause: () => signal('SIGSTOP'), resume: () => signal('SIGCONT'), stop };
}
