// Duration ("5m", "1h", "1d", "250ms", or a number of milliseconds) and size ("25M", "10K",
// or a number of bytes) values as config accepts them. Both parse to plain numbers.
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

export function parseDuration(v: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/i.exec(v);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!);
}

export function parseSize(v: string): number | undefined {
  const m = /^\s*(\d+)\s*([kmg]?)b?\s*$/i.exec(v);
  if (!m) return undefined;
  return Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
}

/** Milliseconds; accepts "30s", "5m", "1d" or a non-negative number of ms. */
export const duration = () =>
  z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as 30s, 5m, 1h or 1d, got "${v}"` });
      return z.NEVER;
    }
    return ms;
  });

/** Bytes; accepts "10M", "512K" or a non-negative number of bytes. */
export const size = () =>
  z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const n = parseSize(v);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a size such as 512K, 25M or a number of bytes, got "${v}"` });
      return z.NEVER;
    }
    return n;
  });
