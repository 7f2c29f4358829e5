// Relay throughput, end to end: 10 KB messages accepted over SMTP from `connections` client
// connections by a `postern start` daemon (spool fsync on, as always), and relayed through a
// `routes` next hop to a loopback SMTP sink. The figure is messages/s from the first MAIL of the
// measured run until the sink has received every message, so the outbound queue must drain.
//
// The sink is Postfix's `smtp-sink` (the postfix package, /usr/sbin/smtp-sink) when installed:
// a C event loop that counts messages (`-c`) and is far faster than any relay measured here.
// Otherwise test/helpers/smtp-sink.ts (smtp-server, in the bench process); the JSON says which.
//
// Used by `npm run bench` (bench/run.ts). Config keys set for the daemon: `routes`, `outbound.tls`.
import { spawn, type ChildProcess } from 'node:child_process';
import { access } from 'node:fs/promises';
import { constants } from 'node:fs';
import { runLoad, percentile, makeMessage } from './smtp-load.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { removeLater } from './scratch.js';
import { startSink } from '../test/helpers/smtp-sink.js';
import { freeLoopbackPort, waitForListener } from '../test/helpers/system-service.js';
import { startDelayProxy, type DelayProxy } from './delay-proxy.js';
import { cpuSample } from './proc-cpu.js';

export const POSTFIX_SMTP_SINK = '/usr/sbin/smtp-sink';
const DOMAIN = 'relay.bench.test';

export interface RelayBenchOptions {
  messages: number;
  connections: number;
  size: number;
  warmup?: number;
  /** Force the in-process sink even when smtp-sink is installed. */
  nodeSink?: boolean;
  /** Put a delay proxy (delay-proxy.ts) with this round trip between Postern and the sink. */
  rttMs?: number;
}

/** A message counter on a loopback port. */
interface CountingSink {
  kind: string;
  port: number;
  received(): number;
  sessions(): number;
  stop(): Promise<void>;
}

/** Postfix's smtp-sink with `-c`: it writes "sess=N quit=N mesg=N\r" whenever a count changes. */
async function startPostfixSink(): Promise<CountingSink> {
  const port = await freeLoopbackPort();
  const args = ['-4', '-c'];
  // smtp-sink refuses to run as root without a user to switch to.
  if (process.getuid?.() === 0) args.push('-u', 'nobody');
  args.push(`127.0.0.1:${port}`, '1024');
  const proc: ChildProcess = spawn(POSTFIX_SMTP_SINK, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let mesg = 0;
  let sess = 0;
  let tail = '';
  let stderr = '';
  proc.stdout!.on('data', (c: Buffer) => {
    const recs = (tail + c.toString('latin1')).split(/[\r\n]/);
    tail = recs.pop() ?? '';
    for (let i = recs.length - 1; i >= 0; i--) {
      const m = /sess=(\d+) .*mesg=(\d+)/.exec(recs[i]!);
      if (m) {
        sess = Number(m[1]);
        mesg = Number(m[2]);
        break;
      }
    }
  });
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
  };
  try {
    await waitForListener(port, '127.0.0.1', 10_000, `smtp-sink (127.0.0.1:${port})`);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}: ${stderr}`);
  }
  return { kind: `postfix smtp-sink (${POSTFIX_SMTP_SINK})`, port, received: () => mesg, sessions: () => sess, stop };
}

async function startNodeSink(): Promise<CountingSink> {
  // Keeps no message bytes: a 6,000-message run would otherwise hold 60 MB for nothing.
  let n = 0;
  const sink = await startSink({
    data: () => {
      n++;
      return null;
    },
  });
  return { kind: 'test/helpers/smtp-sink.ts (smtp-server, in the bench process)', port: sink.port, received: () => n, sessions: () => sink.connections, stop: () => sink.stop() };
}

async function waitCount(sink: CountingSink, n: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (sink.received() < n) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

async function hasPostfixSink(): Promise<boolean> {
  try {
    await access(POSTFIX_SMTP_SINK, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs the relay bench and returns its JSON record (`bench: 'smtp-relay'`, or 'smtp-relay-rtt' with `rttMs`). */
export async function benchRelay(o: RelayBenchOptions): Promise<Record<string, unknown>> {
  const sink = !o.nodeSink && (await hasPostfixSink()) ? await startPostfixSink() : await startNodeSink();
  let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let proxy: DelayProxy | undefined;
  try {
    proxy = o.rttMs ? await startDelayProxy(sink.port, o.rttMs / 2) : undefined;
    d = await startDaemon({
      log: { level: 'warn' },
      routes: { [DOMAIN]: `smtp://127.0.0.1:${proxy?.port ?? sink.port}` },
      outbound: { tls: 'none' },
    });
    const body = makeMessage(o.size, 'sender@example.test', `rcpt@${DOMAIN}`);
    const opts = { host: '127.0.0.1', port: d.ports.smtp!, connections: o.connections, from: 'sender@example.test', body, to: (i: number) => `rcpt${i % 50}@${DOMAIN}` };
    // Warm-up: JIT, outbound connections; measured from a quiet queue.
    const warm = await runLoad({ ...opts, messages: o.warmup ?? 200 });
    if (warm.failed) throw new Error(`relay warm-up failed: ${warm.errors.join('; ')}`);
    if (!(await waitCount(sink, warm.sent, 60_000))) throw new Error(`relay warm-up: the sink got ${sink.received()} of ${warm.sent}`);
    const base = sink.received();
    const sessions0 = sink.sessions();
    const cpu0 = await cpuSample(d.proc.pid!);
    const t0 = performance.now();
    const r = await runLoad({ ...opts, messages: o.messages });
    const acceptS = r.wallMs / 1000;
    const complete = await waitCount(sink, base + r.sent, 180_000);
    const e2eS = (performance.now() - t0) / 1000;
    const relayed = sink.received() - base;
    const cpu1 = await cpuSample(d.proc.pid!);
    const perMsg = (ms: number) => +(ms / Math.max(1, relayed)).toFixed(3);
    return {
      bench: o.rttMs ? 'smtp-relay-rtt' : 'smtp-relay',
      ...(o.rttMs ? { next_hop_rtt_ms: o.rttMs } : {}),
      messages: o.messages,
      accepted: r.sent,
      failed: r.failed,
      relayed,
      complete,
      connections: o.connections,
      message_bytes: body.length,
      fsync: true,
      sink: sink.kind,
      // Connection reuse: sessions the sink saw end (smtp-sink) or open (in-process sink).
      sink_sessions: sink.sessions() - sessions0,
      accepted_msgs_per_s: Math.round(r.sent / acceptS),
      relayed_msgs_per_s: Math.round(relayed / e2eS),
      e2e_s: +e2eS.toFixed(2),
      p50_accept_ms: +percentile(r.latenciesMs, 50).toFixed(2),
      p99_accept_ms: +percentile(r.latenciesMs, 99).toFixed(2),
      // CPU of the daemon (all threads, and its event loop's thread) per relayed message.
      ...(cpu0 && cpu1
        ? {
            daemon_cpu_ms_per_msg: perMsg(cpu1.processMs - cpu0.processMs),
            main_thread_cpu_ms_per_msg: perMsg(cpu1.mainThreadMs - cpu0.mainThreadMs),
            main_thread_busy: +((cpu1.mainThreadMs - cpu0.mainThreadMs) / (e2eS * 1000)).toFixed(2),
          }
        : {}),
      errors: r.errors,
    };
  } finally {
    await d?.stop();
    await proxy?.stop();
    await sink.stop();
    if (d) removeLater(d.dir);
  }
}
