// Pass: comparators, match types and relational operators (RFC 5228 §2.7.1, §2.7.3; RFC 4790
// §9; RFC 5231 §4-§5; regex extension). Resolves each matching test's MatchSpec into
// `node.data.match`, and compiles literal :regex keys so an invalid regex is a compile error.
import { COMPARATORS, REL_OPS, prepareKeys, program, type Comparator, type MatchSpec, type MatchType, type RelOp } from '../match.js';
import { RegexError } from '../regex.js';
import type { CNode, ValidateCtx } from '../registry.js';
import { walk } from './build.js';

const MATCH_TYPES: MatchType[] = ['is', 'contains', 'matches', 'regex', 'count', 'value'];

/** The key list of a matching test: by convention its last positional argument. */
export function keyArg(n: CNode) {
  return n.args[n.args.length - 1];
}

export function matchPass(nodes: CNode[], v: ValidateCtx): void {
  walk(nodes, (n) => {
    if (!n.spec.tags.some((t) => t.name === 'comparator')) return;
    const ct = n.tags.get('comparator');
    let comparator: Comparator = 'i;ascii-casemap';
    if (ct?.value?.kind === 'string') {
      const name = ct.value.value.toLowerCase();
      if (!(COMPARATORS as readonly string[]).includes(name)) v.report(`unknown comparator "${ct.value.value}"`, ct.value.location);
      else {
        comparator = name as Comparator;
        if (!v.has(`comparator-${name}`)) v.report(`comparator "${name}" needs require "comparator-${name}"`, ct.value.location);
      }
    }
    const type = MATCH_TYPES.find((t) => n.tags.has(t)) ?? 'is';
    let rel: RelOp | undefined;
    if (type === 'count' || type === 'value') {
      const use = n.tags.get(type)!;
      const op = use.value?.kind === 'string' ? use.value.value.toLowerCase() : '';
      if (!(REL_OPS as readonly string[]).includes(op)) {
        v.report(`invalid relational operator "${op}" (expected gt, ge, lt, le, eq or ne)`, use.value?.location ?? use.location);
      } else rel = op as RelOp;
    }
    if (comparator === 'i;ascii-numeric' && (type === 'contains' || type === 'matches' || type === 'regex')) {
      v.report(`comparator "i;ascii-numeric" does not support :${type}`, n.tags.get(type)!.location);
    }
    const spec: MatchSpec = { type, comparator, ...(rel ? { rel } : {}) };
    n.data.match = spec;
    const keyValue = keyArg(n);
    if (keyValue && keyValue.kind !== 'number' && type !== 'count') {
      // Literal keys are folded and compiled once here (match.ts prepareKeys), not per message.
      const list = keyValue.kind === 'string' ? [keyValue.value] : keyValue.values;
      if (!(v.has('variables') && list.some((k) => k.includes('${')))) n.data.prepared = prepareKeys(spec, list, v.limits);
    }
    if (type === 'regex' || type === 'matches') {
      const keys = keyArg(n);
      if (keys && keys.kind !== 'number') {
        const list = keys.kind === 'string' ? [keys.value] : keys.values;
        for (const k of list) {
          if (v.has('variables') && k.includes('${')) continue; // compiled at run time
          try {
            program(type, k, comparator, v.limits);
          } catch (e) {
            if (e instanceof RegexError) v.report(`invalid ${type === 'regex' ? 'regular expression' : 'pattern'} "${k}": ${e.message}`, keys.location);
            else throw e;
          }
        }
      }
    }
  });
}
