// RFC 5235 spamtest, spamtestplus (:percent) and virustest. Values come from the scanner
// plugins' results through the host, or, when no scanner ran, from configured headers
// (CONTRACT.md `sieve.spamtest: {header, max}`, `sieve.virustest: {header, values}`).
// spamtest: "0" not tested, "1" clean … "10" certainly spam; :percent "0".."100".
// virustest: "0" not tested, "1" clean … "5" infected.
import { headersNamed, unfold } from '../message.js';
import { comparatorTag, matchTags, type ExtensionDef, type Runtime } from '../registry.js';

export function spamValue(rt: Runtime, percent: boolean): string {
  let s = rt.host.spamScore?.();
  if (!s) {
    const f = headersNamed(rt.headers, rt.config.spamtest.header)[0];
    if (!f) return '0';
    const m = /-?\d+(?:\.\d+)?/.exec(unfold(f.raw));
    if (!m) return '0';
    s = { score: Number(m[0]), max: rt.config.spamtest.max };
  }
  const ratio = Math.min(1, Math.max(0, s.score / s.max));
  if (percent) return String(Math.round(ratio * 100));
  return String(s.score <= 0 ? 1 : Math.min(10, 1 + Math.ceil(ratio * 9)));
}

export function virusValue(rt: Runtime): string {
  const lvl = rt.host.virusLevel?.();
  if (lvl !== undefined) return String(lvl);
  const f = headersNamed(rt.headers, rt.config.virustest.header)[0];
  if (!f) return '0';
  const v = unfold(f.raw).toLowerCase();
  for (const [k, n] of Object.entries(rt.config.virustest.values)) if (k.toLowerCase() === v) return String(n);
  return '0';
}

const spamtest: ExtensionDef = {
  capabilities: ['spamtest', 'spamtestplus', 'virustest'],
  register(reg) {
    reg.add({
      name: 'spamtest',
      kind: 'test',
      extension: 'spamtest',
      tags: [comparatorTag(), ...matchTags(), { name: 'percent', extension: 'spamtestplus' }],
      positional: [{ name: 'value', kind: 'string' }],
      test(n, rt) {
        return rt.match(n, [spamValue(rt, n.tags.has('percent'))], [rt.str(n.args[0])]);
      },
    });
    reg.add({
      name: 'virustest',
      kind: 'test',
      extension: 'virustest',
      tags: [comparatorTag(), ...matchTags()],
      positional: [{ name: 'value', kind: 'string' }],
      test(n, rt) {
        return rt.match(n, [virusValue(rt)], [rt.str(n.args[0])]);
      },
    });
  },
};
export default spamtest;
