// REST API latency: GET and PUT on /v1/rules/{name} against a running daemon (embedded store),
// 200 requests in flight at once over keep-alive connections (bench/http-load.ts), each request
// timed from send to the last byte of the answer. PUTs change the rule set, so each makes a new
// version: they are serialised by the rule-set lock, and their latency includes the wait for the
// ones before.
// The API's own rate limit is off for the run.
import { startDaemon, removeDir } from '../test/helpers/daemon.js';
import { percentile } from './smtp-load.js';
import { runHttpLoad, type HttpRequestSpec } from './http-load.js';

const TOKEN = 'bench-token-0123456789abcdef';

export interface ApiBenchOptions {
  concurrency?: number;
  gets?: number;
  puts?: number;
}

/** Runs the API benchmark and returns one result object per figure (api-get-rule, api-put-rule). */
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
    return [row('api-get-rule', g), row('api-put-rule', p)];
  } finally {
    await d.stop();
    await removeDir(d.dir);
  }
}
