// A fixed-window request limit per client address for the API itself (`api.rate_limit`): at most
// `requests` per `per` milliseconds; the next one gets 429 with Retry-After. In memory, per node.
import { ApiProblem } from './errors.js';

export class RateLimiter {
  private windows = new Map<string, { count: number; resetAt: number }>();
  private lastSweep = Date.now();

  constructor(
    private readonly requests: number,
    private readonly perMs: number,
  ) {}

  /** Counts one request from `client`; throws 429 when over the limit. */
  hit(client: string, now = Date.now()): void {
    if (this.requests <= 0) return;
    if (now - this.lastSweep > this.perMs) this.sweep(now);
    let w = this.windows.get(client);
    if (!w || w.resetAt <= now) this.windows.set(client, (w = { count: 0, resetAt: now + this.perMs }));
    w.count++;
    if (w.count > this.requests) {
      const seconds = Math.max(1, Math.ceil((w.resetAt - now) / 1000));
      throw new ApiProblem('rate-limited', `more than ${this.requests} requests in ${this.perMs / 1000}s from ${client}`, { headers: { 'retry-after': String(seconds) } });
    }
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [k, w] of this.windows) if (w.resetAt <= now) this.windows.delete(k);
  }
}
