// Retry schedule: `outbound.retry` lists the waits between attempts; the last one repeats
// (RFC 5321 §4.5.4.1 asks for a retry interval of at least 30 minutes for remote delivery; the
// default list starts shorter for local trouble such as a full disk). `outbound.lifetime` bounds
// the whole: a recipient still failing after that is given up (RFC 5321 §4.5.4.1: 4-5 days).
//
// Config keys: `outbound.retry`, `outbound.lifetime`.

/** Wait before the next attempt after `failures` failed attempts (1 = the first failed). */
export function retryDelay(retry: readonly number[], failures: number): number {
  if (retry.length === 0) return 60_000;
  const i = Math.min(Math.max(failures, 1), retry.length) - 1;
  return retry[i]!;
}
