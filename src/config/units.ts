// Duration ("5m", "1h", "1d", "250ms", "1.5h", or a number of milliseconds) and size ("25M",
// "10K", "512KB", or a number of bytes) values as config accepts them. Both parse to plain
// numbers: milliseconds and bytes. Units are case-insensitive; sizes are binary (1K = 1024).
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** Milliseconds, or undefined when `v` is not a duration. A bare number string is not one. */
export function parseDuration(v: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/i.exec(v);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!);
}

/** Bytes, or undefined when `v` is not a size. "100" is 100 bytes. */
export function parseSize(v: string): number | undefined {
  const m = /^\s*(\d+)\s*([kmg]?)b?\s*$/i.exec(v);
  if (!m) return undefined;
  return Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
}

const kind = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'map' : typeof v);

function unit(what: string, example: string, parse: (s: string) => number | undefined) {
  const hint = `expected ${what} such as ${example}`;
  return z
    .custom<number | string>((v) => typeof v === 'number' || typeof v === 'string', {
      error: (iss) => (iss.input === undefined ? 'required' : `${hint}, received ${kind(iss.input)}`),
    })
    .transform((v, ctx) => {
      const n = typeof v === 'number' ? (Number.isSafeInteger(v) && v >= 0 ? v : undefined) : parse(v);
      if (n === undefined) {
        ctx.addIssue({ code: 'custom', message: `${hint}, got ${JSON.stringify(v)}` });
        return z.NEVER;
      }
      return n;
    });
}

/** Milliseconds; accepts "30s", "5m", "1h", "1d", "1w", "250ms" or a non-negative integer of ms. */
export const duration = () => unit('a duration', '30s, 5m, 1h or 1d', parseDuration);

/** Bytes; accepts "512K", "25M", "1G" or a non-negative integer of bytes. */
export const size = () => unit('a size', '512K, 25M or a number of bytes', parseSize);
