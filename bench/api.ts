// REST API latency: GET and PUT on /v1/rules/{name} against a running daemon (embedded store),
// 200 requests in flight at once over keep-alive connections, each request timed from send to
// the last byte of the answer. PUTs change the rule set, so each makes a new version: they are
// serialised by the rule-set lock, and their latency includes the wait for the ones before.
// The API's own rate limit is off for the run.
import { request, Agent } from 'node:http';
import { startDaemon, removeDir } from '../test/helpers/daemon.js';
import { percentile } from './smtp-load.js';

const TOKEN = 'bench-token-0123456789abcdef';

export interface ApiBenchOptions {
  concurrency?: number;
  gets?: number;
  puts?: number;
}

function call(agent: Agent, port: number, method: 'GET' | 'PUT', path: string, body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, method, path, agent, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode! < 300 ? resolve(performance.now() - t0) : reject(new Error(`${method} ${path}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function load(n: number, concurrency: number, one: (i: number) => Promise<number>): Promise<{ ms: number[]; seconds: number }> {
  const ms: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) ms.push(await one(next++));
    }),
  );
  return { ms, seconds: (performance.now() - t0) / 1000 };
}

/** Runs the API benchmark and returns one result object per figure (api-get-rule, api-put-rule). */
export async function benchApi(o: ApiBenchOptions = {}): Promise<Record<string, unknown>[]> {
  const concurrency = o.concurrency ?? 200;
  const gets = o.gets ?? 10_000;
  const puts = o.puts ?? 1_000;
  const d = await startDaemon({
    log: { level: 'warn' },
    listen: { api: { host: '127.0.0.1', port: 0 } },
    plugins: ['relay-acl', 'sieve'],
    api: { tokens: [{ name: 'bench', token: TOKEN, scope: 'write' }], rate_limit: { requests: 0 } },
  });
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    const port = d.ports.api!;
    const script = (i: number) => JSON.stringify({ script: `require "reject";\nif header :contains "subject" "bench-${i}" { reject "no"; }\n` });
    for (let r = 0; r < 10; r++) await call(agent, port, 'PUT', `/v1/rules/bench-${r}`, script(r));
    // Warm-up: connections open, JIT warm.
    await load(1000, concurrency, (i) => call(agent, port, 'GET', `/v1/rules/bench-${i % 10}`));
    const g = await load(gets, concurrency, (i) => call(agent, port, 'GET', `/v1/rules/bench-${i % 10}`));
    const p = await load(puts, concurrency, (i) => call(agent, port, 'PUT', `/v1/rules/bench-${i % 10}`, script(i)));
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
    agent.destroy();
    await d.stop();
    await removeDir(d.dir);
  }
}
