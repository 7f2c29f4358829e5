// `npm run bench`: prints one JSON line per figure, and one line describing the machine.
//   fsync-limit   fsynced 10 KB files/s at the load's concurrency (tmp → fsync → rename → dir
//                 fsync, like a Maildir delivery): the machine's limit for this work; measured
//                 before and after the Maildir figures, the higher of the two
//   smtp-maildir  10 KB messages over 20 connections into Maildir, relay-acl + dnsbl (cached) on:
//                 accepted msgs/s, p50/p99 accept latency, and delivered msgs/s (until every
//                 message is in its Maildir), and the daemon's CPU ms per message (whole
//                 process and main thread, from /proc) with the main thread's busy share, and
//                 the load generator's own CPU ms per message (it runs on the same cores)
//   smtp-maildir-pipelined   the same with a client that pipelines MAIL, RCPT and DATA (RFC 2920),
//                 as relaying MTAs do
//   smtp-relay    10 KB messages over 20 connections relayed through a `routes` next hop to a
//                 loopback SMTP sink (Postfix's smtp-sink when installed): messages/s end to end,
//                 until the sink has every message (bench/relay.ts)
//   smtp-relay-rtt   the same (2,000 messages) with the next hop 20 ms away (a delay proxy on
//                 loopback, bench/delay-proxy.ts): what the round trips per message cost; the
//                 outbound client pipelines the envelope (RFC 2920), two round trips a message
//   smtp-proxy    in-line proxy routes against queue mode, same sink (bench/proxy.ts)
//   sieve-admin-rules, sieve-compile   the Sieve engine in-process (bench/sieve.ts)
//   api           REST API latency, GET and PUT of a rule at 200 concurrent requests (bench/api.ts)
//   chain-bare, chain-spamd, chain-clamd, chain-dkim, chain-sieve, chain-full   what each content
//                 plugin costs: accepted msgs/s of a bare chain and with spamd, clamd, DKIM verify,
//                 a 100-rule Sieve script, and all of them (bench/chain.ts); BENCH_ONLY=chain runs all
// The daemon runs from the build (dist/), which the bench makes first.
// Environment: BENCH_NO_BUILD=1 (dist/ is current), BENCH_ONLY (see the end), BENCH_MESSAGES
// (default 6000), BENCH_CONNECTIONS (20), BENCH_SIZE (10240).
import { cpus, totalmem, hostname, release, tmpdir } from 'node:os';
import { mkdtemp, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { measureFsyncLimit } from './fsync-limit.js';
import { runLoad, percentile, makeMessage } from './smtp-load.js';
import { spawnSync } from 'node:child_process';
import { startDaemon, REPO } from '../test/helpers/daemon.js';
import { removeLater, removeScratch } from './scratch.js';
import { startDnsServer } from '../test/helpers/dns-server.js';
import { benchSieve } from './sieve.js';
import { benchRelay } from './relay.js';
import { cpuSample } from './proc-cpu.js';
import { benchProxy } from './proxy.js';
import { benchApi } from './api.js';
import { benchChain, CHAIN_FIGURES } from './chain.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 6000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);
const SIZE = Number(process.env.BENCH_SIZE ?? 10240);
const USERS = 20;

const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

function machine() {
  const c = cpus();
  return { host: hostname(), cpus: c.length, cpu_model: c[0]?.model, mem_gib: +(totalmem() / 2 ** 30).toFixed(1), kernel: release(), node: process.version, date: new Date().toISOString() };
}

async function countDelivered(dataDir: string): Promise<number> {
  let n = 0;
  for (let u = 0; u < USERS; u++) {
    const files = await readdir(join(dataDir, 'mail', 'example.test', `user${u}`, 'new')).catch(() => []);
    n += files.length;
  }
  return n;
}

/** One fsync-limit measurement in a scratch folder of its own. */
async function measureFsync(): Promise<{ filesPerS: number; cpuMsPerFile: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-bench-fsync-'));
  try {
    const r = await measureFsyncLimit({ dir, concurrency: CONNECTIONS, seconds: 5 });
    return { filesPerS: Math.round(r.files_per_s), cpuMsPerFile: +r.cpu_ms_per_file.toFixed(3) };
  } finally {
    removeLater(dir);
  }
}

async function benchSmtpMaildir(pipelining: boolean): Promise<void> {
  // The DNSBL zone lists nothing the bench uses; its answers are cached in the store, as a
  // production resolver cache would serve repeat clients.
  const dns = await startDnsServer({ records: { '2.0.0.127.bl.bench.example': { A: ['127.0.0.2'] } } });
  const d = await startDaemon({
    log: { level: 'warn' },
    dns: { servers: [`127.0.0.1:${dns.port}`] },
    plugins: ['relay-acl', { dnsbl: { zones: ['bl.bench.example'] } }],
    relay: { networks: ['192.0.2.0/24'] },
  });
  try {
    for (let u = 0; u < USERS; u++) {
      const r = await d.cli(['user', 'add', `user${u}@example.test`, '--password-stdin'], 'secret-password\n');
      if (r.code !== 0) throw new Error(`user add failed: ${r.stderr}`);
    }
    // Warm-up: fills the DNSBL cache and the JIT.
    const body = makeMessage(SIZE, 'sender@remote.example', 'user0@example.test');
    const opts = { host: '127.0.0.1', port: d.ports.smtp!, connections: CONNECTIONS, from: 'sender@remote.example', body, pipelining };
    const warm = await runLoad({ ...opts, messages: 200, to: (i) => `user${i % USERS}@example.test` });
    if (warm.failed) throw new Error(`warm-up failed: ${warm.errors.join('; ')}`);
    // Wait until the warm-up is delivered, so the measured run starts from a quiet queue.
    while ((await countDelivered(d.dataDir)) < warm.sent) await new Promise((res) => setTimeout(res, 20));
    const before = await countDelivered(d.dataDir);
    const cpu0 = await cpuSample(d.proc.pid!);
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await runLoad({ ...opts, messages: MESSAGES, to: (i) => `user${i % USERS}@example.test` });
    // The load generator shares the machine's cores with the daemon: its CPU is reported too.
    const client = process.cpuUsage(client0);
    const acceptS = r.wallMs / 1000;
    let delivered = 0;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      delivered = (await countDelivered(d.dataDir)) - before;
      if (delivered >= r.sent) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    const e2eS = (performance.now() - t0) / 1000;
    const cpu1 = await cpuSample(d.proc.pid!);
    const perMsg = (ms: number) => +(ms / Math.max(1, delivered)).toFixed(3);
    emit({
      bench: pipelining ? 'smtp-maildir-pipelined' : 'smtp-maildir',
      client: pipelining ? 'MAIL, RCPT, DATA in one write (RFC 2920)' : 'each command waits for its reply',
      messages: MESSAGES,
      accepted: r.sent,
      failed: r.failed,
      delivered,
      connections: CONNECTIONS,
      message_bytes: body.length,
      plugins: 'relay-acl,dnsbl(cached)',
      accepted_msgs_per_s: Math.round(r.sent / acceptS),
      delivered_msgs_per_s: Math.round(delivered / e2eS),
      p50_accept_ms: +percentile(r.latenciesMs, 50).toFixed(2),
      p99_accept_ms: +percentile(r.latenciesMs, 99).toFixed(2),
      ...(cpu0 && cpu1
        ? {
            daemon_cpu_ms_per_msg: perMsg(cpu1.processMs - cpu0.processMs),
            main_thread_cpu_ms_per_msg: perMsg(cpu1.mainThreadMs - cpu0.mainThreadMs),
            main_thread_busy: +((cpu1.mainThreadMs - cpu0.mainThreadMs) / (e2eS * 1000)).toFixed(2),
          }
        : {}),
      client_cpu_ms_per_msg: +((client.user + client.system) / 1000 / Math.max(1, r.sent)).toFixed(3),
      errors: r.errors,
    });
  } finally {
    await d.stop();
    await dns.stop();
    removeLater(d.dir);
  }
}

// The daemon runs compiled, as `npm start` runs it: build first (BENCH_NO_BUILD=1 skips it when
// dist/ is known to be current).
if (process.env.BENCH_NO_BUILD !== '1') {
  const tsc = spawnSync(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO, 'tsconfig.json')], { stdio: 'inherit' });
  if (tsc.status !== 0) throw new Error('build failed; the bench runs the compiled daemon');
}
process.env.POSTERN_DAEMON_BUILT = '1';

emit({ bench: 'machine', ...machine() });
// BENCH_ONLY=smtp-maildir,sieve (comma-separated names) runs a subset; the machine line always prints.
const only = process.env.BENCH_ONLY?.split(',').map((x) => x.trim());
const want = (name: string) => !only || only.includes(name);
// Scratch folders go at the end (scratch.ts: figures must not pay for the previous one's cleanup).
try {
  // The limit is measured before and after the Maildir figures, and the higher one is the
  // figure: it varies with what the file system did in the minutes before (scratch.ts), and the
  // Maildir figures are compared with the better of the two.
  const fsyncRuns: { filesPerS: number; cpuMsPerFile: number }[] = [];
  if (want('fsync-limit')) fsyncRuns.push(await measureFsync());
  if (want('smtp-maildir')) await benchSmtpMaildir(false);
  if (want('smtp-maildir-pipelined')) await benchSmtpMaildir(true);
  if (want('fsync-limit')) {
    fsyncRuns.push(await measureFsync());
    const best = fsyncRuns.reduce((a, b) => (b.filesPerS > a.filesPerS ? b : a));
    emit({
      bench: 'fsync-limit',
      files_per_s: best.filesPerS,
      runs: fsyncRuns.map((r) => r.filesPerS),
      // The writer's CPU (all threads) per file in the run that gave the figure, and the cores
      // that kept busy: about the machine's core count when the limit is CPU-bound, not disk-bound.
      cpu_ms_per_file: best.cpuMsPerFile,
      busy_cores: +((best.cpuMsPerFile * best.filesPerS) / 1000).toFixed(2),
      concurrency: CONNECTIONS,
      file_bytes: SIZE,
    });
  }
  if (want('smtp-relay')) emit(await benchRelay({ messages: MESSAGES, connections: CONNECTIONS, size: SIZE }));
  if (want('smtp-relay-rtt')) emit(await benchRelay({ messages: Math.min(MESSAGES, 2000), connections: CONNECTIONS, size: SIZE, rttMs: 20 }));
  if (want('smtp-proxy')) emit(await benchProxy({ messages: Math.min(MESSAGES, 3000), connections: CONNECTIONS, size: SIZE }));
  if (want('sieve')) await benchSieve(emit);
  if (want('api')) for (const line of await benchApi()) emit(line);
  // The chain figures are compared with the bare one, which runs whenever another does.
  const chainFigures = CHAIN_FIGURES.filter((f) => want('chain') || want(`chain-${f}`));
  if (chainFigures.length) {
    const figures = chainFigures.includes('bare') ? chainFigures : ['bare' as const, ...chainFigures];
    await benchChain(emit, { figures, messages: Number(process.env.BENCH_CHAIN_MESSAGES ?? 600), connections: CONNECTIONS, size: SIZE });
  }
} finally {
  await removeScratch();
}
