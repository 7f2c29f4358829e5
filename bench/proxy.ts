// In-line proxy beside queue mode: the same 10 KB messages, over `connections` client connections,
// through one `postern start` daemon to one loopback sink (test/helpers/smtp-sink.ts, in the bench
// process), for two routed domains:
//   proxy.bench.test  `mode: proxy` — the client's 250 is the sink's; nothing is spooled; each
//                     transaction opens its own backend connection (EHLO, MAIL, RCPT, DATA, QUIT)
//   queue.bench.test  `mode: queue` — spooled (fsync) before 250, then relayed by the queue
// Figures: messages/s accepted (proxy: = delivered), for queue mode also messages/s until the sink
// has them all; p50/p99 of the end-of-DATA reply latency as the client sees it.
//
// `benchProxy(options)` returns one JSON record (`bench: 'proxy-vs-queue'`); bench/run.ts prints it.
// Config keys set for the daemon: `routes` (long form, `mode`), `outbound.tls`, `log.level`.
import { runLoad, percentile, makeMessage, type LoadResult } from './smtp-load.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { removeLater } from './scratch.js';
import { startSink } from '../test/helpers/smtp-sink.js';

export interface ProxyBenchOptions {
  messages: number;
  connections: number;
  size: number;
  warmup?: number;
}

async function waitCount(received: () => number, n: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (received() < n) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

function figures(r: LoadResult): Record<string, unknown> {
  return {
    accepted: r.sent,
    failed: r.failed,
    accepted_msgs_per_s: Math.round(r.sent / (r.wallMs / 1000)),
    p50_data_ms: +percentile(r.latenciesMs, 50).toFixed(2),
    p99_data_ms: +percentile(r.latenciesMs, 99).toFixed(2),
    errors: r.errors,
  };
}

/** Runs proxy mode, then queue mode, against the same sink and daemon. */
export async function benchProxy(o: ProxyBenchOptions): Promise<Record<string, unknown>> {
  let n = 0;
  // Keeps no message bytes, only a count.
  const sink = await startSink({
    data: () => {
      n++;
      return null;
    },
  });
  let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
  try {
    d = await startDaemon({
      log: { level: 'warn' },
      plugins: [],
      routes: {
        'proxy.bench.test': { nexthop: `smtp://127.0.0.1:${sink.port}`, mode: 'proxy' },
        'queue.bench.test': { nexthop: `smtp://127.0.0.1:${sink.port}`, mode: 'queue' },
      },
      outbound: { tls: 'none' },
    });
    const run = async (domain: string, messages: number) => {
      const body = makeMessage(o.size, 'sender@example.test', `rcpt@${domain}`);
      return { body, r: await runLoad({ host: '127.0.0.1', port: d!.ports.smtp!, connections: o.connections, from: 'sender@example.test', body, messages, to: (i: number) => `rcpt${i % 50}@${domain}` }) };
    };
    // Warm-up of both paths (JIT, outbound connections).
    for (const dom of ['proxy.bench.test', 'queue.bench.test']) {
      const w = await run(dom, o.warmup ?? 200);
      if (w.r.failed) throw new Error(`proxy bench warm-up (${dom}) failed: ${w.r.errors.join('; ')}`);
    }
    if (!(await waitCount(() => n, 2 * (o.warmup ?? 200), 60_000))) throw new Error(`proxy bench warm-up: the sink got ${n}`);

    const s0 = sink.connections;
    const proxy = await run('proxy.bench.test', o.messages);
    const proxySessions = sink.connections - s0;

    const base = n;
    const t0 = performance.now();
    const queue = await run('queue.bench.test', o.messages);
    const complete = await waitCount(() => n, base + queue.r.sent, 180_000);
    const e2eS = (performance.now() - t0) / 1000;
    return {
      bench: 'proxy-vs-queue',
      messages: o.messages,
      connections: o.connections,
      message_bytes: proxy.body.length,
      sink: 'test/helpers/smtp-sink.ts (smtp-server, in the bench process)',
      proxy: { ...figures(proxy.r), backend_sessions: proxySessions, spooled: 0 },
      queue: { ...figures(queue.r), relayed: n - base, complete, relayed_msgs_per_s: Math.round((n - base) / e2eS), e2e_s: +e2eS.toFixed(2) },
    };
  } finally {
    await d?.stop();
    await sink.stop();
    if (d) removeLater(d.dir);
  }
}

// `npx tsx bench/proxy.ts [messages] [connections]` runs it alone.
if (import.meta.url === `file://${process.argv[1]}`) {
  const messages = Number(process.argv[2] ?? 2000);
  const connections = Number(process.argv[3] ?? 20);
  console.log(JSON.stringify(await benchProxy({ messages, connections, size: 10 * 1024 })));
}
