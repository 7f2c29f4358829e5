// RFC 5229 variables: `set` with modifiers (§4: :lower/:upper 40, :lowerfirst/:upperfirst 30,
// :quotewildcard 20 (and :quoteregex from the regex extension), :length 10; at most one per
// precedence, applied highest first), the `string` test (§5), and "${…}" expansion
// (interpret.ts) with match variables ${0}…${9} (§3.2, set by :matches/:regex).
import { comparatorTag, matchTags, type CNode, type ExtensionDef, type TagSpec } from '../registry.js';

export const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const MODIFIERS: { name: string; prec: number; apply(s: string): string; extension?: string }[] = [
  { name: 'lower', prec: 40, apply: (s) => s.toLowerCase() },
  { name: 'upper', prec: 40, apply: (s) => s.toUpperCase() },
  { name: 'lowerfirst', prec: 30, apply: (s) => s.charAt(0).toLowerCase() + s.slice(1) },
  { name: 'upperfirst', prec: 30, apply: (s) => s.charAt(0).toUpperCase() + s.slice(1) },
  { name: 'quotewildcard', prec: 20, apply: (s) => s.replace(/[*?\\]/g, '\\$&') },
  { name: 'quoteregex', prec: 20, apply: (s) => s.replace(/[\\^$.[\]|()?*+{}]/g, '\\$&'), extension: 'regex' },
  { name: 'length', prec: 10, apply: (s) => String([...s].length) },
];

/** The modifier tags of "set" (RFC 5229 §4), for commands that take them too (extracttext). */
export function modifierTags(): TagSpec[] {
  return MODIFIERS.map((m) => ({ name: m.name, group: `precedence-${m.prec}`, ...(m.extension ? { extension: m.extension } : {}) }));
}

/** Applies the node's modifiers, highest precedence first (RFC 5229 §4). */
export function applyModifiers(n: CNode, value: string): string {
  for (const m of BY_PRECEDENCE) if (n.tags.has(m.name)) value = m.apply(value);
  return value;
}

const BY_PRECEDENCE = [...MODIFIERS].sort((a, b) => b.prec - a.prec);

const variables: ExtensionDef = {
  capabilities: ['variables'],
  register(reg) {
    reg.add({
      name: 'set',
      kind: 'command',
      extension: 'variables',
      tags: modifierTags(),
      positional: [
        { name: 'name', kind: 'string' },
        { name: 'value', kind: 'string' },
      ],
      check(n, v) {
        const a = n.args[0];
        if (a?.kind !== 'string') return;
        const name = a.value;
        const ok = VARIABLE_NAME.test(name) || (/^global\.[A-Za-z_][A-Za-z0-9_]*$/i.test(name) && v.has('include'));
        if (!ok) v.report(`set: invalid variable name "${name}"`, a.location);
      },
      run(n, rt) {
        const name = n.args[0]?.kind === 'string' ? n.args[0].value : '';
        rt.setVar(name, applyModifiers(n, rt.str(n.args[1])));
      },
    });
    reg.add({
      name: 'string',
      kind: 'test',
      extension: 'variables',
      tags: [comparatorTag(), ...matchTags()],
      positional: [
        { name: 'source', kind: 'stringlist' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      test(n, rt) {
        let values = rt.list(n.args[0]);
        // RFC 5229 §5: :count counts the source strings that are not empty.
        if (rt.matchSpec(n).type === 'count') values = values.filter((s) => s !== '');
        return rt.match(n, values, rt.list(n.args[1]));
      },
    });
  },
};
export default variables;
