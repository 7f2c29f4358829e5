// REST API latency: GET and PUT on /v1/rules/{name} against a running daemon (embedded store),
// 200 requests in flight at once over keep-alive connections (bench/http-load.ts), each request
// timed from send to the last byte of the answer. PUTs change the rule set, so each makes a new
// version: they are serialised by the rule-set lock, and their latency includes the wait for the
// ones before.
// The API's own rate limit is off for the run.
import { spawnSync } from 'node:child_process';
import { startDaemon } from '../test/helpers/daemon.js';
import { removeLater } from './scratch.js';
import { percentile } from './smtp-load.js';
import { runHttpLoad, type HttpRequestSpec } from './http-load.js';

const TOKEN = 'bench-token-0123456789abcdef';

export interface ApiBenchOptions {
  concurrency?: number;
  gets?: number;
  puts?: number;
}

/** wrk's figures use its own units: "3.17ms", "1.02s", "850.00us". */
function wrkMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2] as 'us' | 'ms' | 's' | 'm'];
  return +(Number(m[1]) * scale).toFixed(2);
}

/**
 * The same GET measured by wrk (Debian `wrk`, a C load generator) when it is installed: one
 * client thread, `concurrency` connections, 5 s. Node's client shares the 2 cores and adds its
 * own event-loop delays to every latency; wrk's figure is closer to the server's own.
 */
function wrkGet(port: number, concurrency: number): Record<string, unknown> {
  const r = spawnSync('wrk', ['-t1', `-c${concurrency}`, '-d5s', '--latency', '-H', `Authorization: Bearer ${TOKEN}`, `http://127.0.0.1:${port}/v1/rules/bench-3`], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { bench: 'api-get-rule-wrk', skipped: `wrk not runnable (${r.error?.message ?? r.stderr.trim()}); apt-get install -y wrk` };
  const out = r.stdout;
  const pct = (p: string) => wrkMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const total = Number(/(\d+) requests in/.exec(out)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return {
    bench: 'api-get-rule-wrk',
    client: 'wrk -t1',
    requests: total,
    concurrency,
    per_s: Math.round(Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1])),
    p50_ms: pct('50'),
    p99_ms: pct('99'),
    non_2xx: non2xx,
  };
}

/** Runs the API benchmark and returns one result object per figure (api-get-rule, api-put-rule, api-get-rule-wrk). */
export async function benchApi(o: ApiBenchOptions = {}): Promise<Record<string, unknown>[]> {
  const concurrency = o.concurrency ?? 200;
  // Enough GETs that p99 is not decided by a single stall of the 200 in flight (1% of 10,000 is
  // fewer requests than are in flight at once).
  const gets = o.gets ?? 40_000;
  const puts = o.puts ?? 1_000;
  const d = await startDaemon({
    log: { level: 'warn' },
    listen: { api: { host: '127.0.0.1', port: 0 } },
    plugins: ['relay-acl', 'sieve'],
    api: { tokens: [{ name: 'bench', token: TOKEN, scope: 'write' }], rate_limit: { requests: 0 } },
  });
  try {
    const port = d.ports.api!;
    const auth = { authorization: `Bearer ${TOKEN}` };
    const script = (i: number) => JSON.stringify({ script: `require "reject";\nif header :contains "subject" "bench-${i}" { reject "no"; }\n` });
    const get = (i: number): HttpRequestSpec => ({ method: 'GET', path: `/v1/rules/bench-${i % 10}`, headers: auth });
    const put = (i: number): HttpRequestSpec => ({ method: 'PUT', path: `/v1/rules/bench-${i % 10}`, headers: auth, body: script(i) });
    await runHttpLoad(port, 10, 1, put);
    // Warm-up: connections open, JIT warm.
    await runHttpLoad(port, 1000, concurrency, get);
    const g = await runHttpLoad(port, gets, concurrency, get);
    const p = await runHttpLoad(port, puts, concurrency, put);
    const row = (bench: string, r: { ms: number[]; seconds: number }) => ({
      bench,
      requests: r.ms.length,
      concurrency,
      per_s: Math.round(r.ms.length / r.seconds),
      p50_ms: +percentile(r.ms, 50).toFixed(2),
      p99_ms: +percentile(r.ms, 99).toFixed(2),
    });
    return [row('api-get-rule', g), row('api-put-rule', p), wrkGet(port, concurrency)];
  } finally {
    await d.stop();
    removeLater(d.dir);
  }
}
