// Reads Prometheus text exposition (what GET /metrics serves) into series → value, for tests
// that compare two scrapes. A series is keyed as `name{a="x",b="y"}` with its labels sorted by
// name (prom-client puts a histogram's `le` first), or just `name` without labels.
export type Scrape = Map<string, number>;

export function parseExposition(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!] as const);
    out.set(series(m[1]!, Object.fromEntries(labels)), Number(m[3]));
  }
  return out;
}

/** The key of one series: series('x_total', { b: '2', a: '1' }) → 'x_total{a="1",b="2"}'. */
export function series(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b));
  return l.length ? `${name}{${l.map(([k, v]) => `${k}="${v}"`).join(',')}}` : name;
}

/** How much a series grew between two scrapes (absent counts as 0, as a counter not yet touched). */
export function grew(before: Scrape, after: Scrape, name: string, labels: Record<string, string> = {}): number {
  const k = series(name, labels);
  return (after.get(k) ?? 0) - (before.get(k) ?? 0);
}

export async function scrape(apiPort: number): Promise<Scrape> {
  const r = await fetch(`http://127.0.0.1:${apiPort}/metrics`);
  if (r.status !== 200) throw new Error(`GET /metrics answered ${r.status}`);
  return parseExposition(await r.text());
}
