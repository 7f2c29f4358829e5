// Rate-limit policies added at run time through the REST API (/v1/policies/relay/rate-limits), on
// top of the rate-limit plugin's configured `limits`. Kept in the store hash
// `policy:ratelimit:policies` (id → JSON StoredRateLimit) and read by plugins/rate-limit on every
// MAIL and RCPT, so a change applies to the next transaction on every node, without a restart.
// A policy is identified by what it counts and its window (the id is derived from both): two
// policies for client_ip per 1h would only make the smaller one matter, so the second is a 409.
// Their counters are keyed by the id (ratelimit:p<id>:…), apart from the configured limits'.
import { createHash } from 'node:crypto';
import { PolicyHash } from './store-hash.js';
import type { Store } from '../store/store.js';

export const RATE_LIMITS_KEY = 'policy:ratelimit:policies';

export const RATE_LIMIT_KEYS = ['client_ip', 'auth_user', 'sender_domain', 'recipient'] as const;
export type RateLimitKey = (typeof RATE_LIMIT_KEYS)[number];

export interface StoredRateLimit {
  id: string;
  /** What is counted and per what (see plugins/rate-limit). */
  key: RateLimitKey;
  max: number;
  /** The window in milliseconds (at least 1s). */
  window_ms: number;
  /** 451 (this transaction) or 421 (the connection is closed too). */
  reply: 451 | 421;
  updated_at: string;
}

export const rateLimitId = (key: RateLimitKey, windowMs: number) => createHash('sha256').update(`${key}:${windowMs}`).digest('hex').slice(0, 12);

function parseStored(raw: string): StoredRateLimit {
  const p = JSON.parse(raw) as StoredRateLimit;
  const ok =
    typeof p.id === 'string' &&
    (RATE_LIMIT_KEYS as readonly string[]).includes(p.key) &&
    Number.isSafeInteger(p.max) &&
    p.max > 0 &&
    Number.isSafeInteger(p.window_ms) &&
    p.window_ms >= 1000 &&
    (p.reply === 451 || p.reply === 421);
  if (!ok) throw new Error('not a rate-limit policy');
  return p;
}

export const rateLimitPolicies = (store: Store | undefined, key = RATE_LIMITS_KEY) => new PolicyHash(store, key, parseStored);

/** 3600000 → "1h", 90000 → "90s": the largest unit that divides the window. */
export function humanWindow(ms: number): string {
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms % n === 0) return `${ms / n}${unit}`;
  return `${ms}ms`;
}
