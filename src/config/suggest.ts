// "Did you mean …?" for unknown config keys: walks the composed zod schema to the object that
// refused the key and picks the known key nearest in spelling (Damerau-Levenshtein distance at
// most 2, or one a prefix of the other). Pure; no I/O.
import type { z } from 'zod';

type Def = { type: string; [k: string]: unknown };
const defOf = (s: unknown): Def | undefined => (s as { _zod?: { def?: Def } } | undefined)?._zod?.def;

/** The object schemas a path may lead to (several when a union is on the way). */
function objectsAt(schema: z.ZodType, path: readonly PropertyKey[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (s: unknown, i: number, depth: number): void => {
    const def = defOf(s);
    if (!def || depth > 64) return;
    switch (def.type) {
      case 'optional':
      case 'nullable':
      case 'default':
      case 'prefault':
      case 'readonly':
      case 'catch':
        return walk(def.innerType, i, depth + 1);
      case 'pipe':
        return walk(def.in, i, depth + 1);
      case 'union':
        for (const o of def.options as unknown[]) walk(o, i, depth + 1);
        return;
      case 'object': {
        const shape = def.shape as Record<string, unknown>;
        if (i === path.length) out.push(shape);
        else if (Object.hasOwn(shape, String(path[i]))) walk(shape[String(path[i])], i + 1, depth + 1);
        return;
      }
      case 'record':
        if (i < path.length) walk(def.valueType, i + 1, depth + 1);
        return;
      case 'array':
        if (i < path.length) walk(def.element, i + 1, depth + 1);
        return;
      default:
        return;
    }
  };
  walk(schema, 0, 0);
  return out;
}

function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The known key nearest to `key` in the object at `path`, or undefined when none is close. */
export function suggestKey(schema: z.ZodType, path: readonly PropertyKey[], key: string): string | undefined {
  const known = [...new Set(objectsAt(schema, path).flatMap((shape) => Object.keys(shape)))];
  const k = key.toLowerCase();
  let best: { name: string; d: number } | undefined;
  for (const name of known) {
    const n = name.toLowerCase();
    const d = n === k ? 0 : distance(k, n);
    const close = d <= (k.length <= 3 ? 1 : 2) || (k.length >= 3 && (n.startsWith(k) || k.startsWith(n)));
    if (close && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}
