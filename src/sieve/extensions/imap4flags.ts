// RFC 5232 imap4flags: setflag/addflag/removeflag (§3), hasflag (§4), :flags on keep and
// fileinto (§5). The internal variable is `rt.flags`; with the variables extension a first
// argument names a variable holding a space-separated flag list instead. The implicit keep
// stores with the internal variable's final value (interpret.ts).
import { comparatorTag, matchTags, type CNode, type ExtensionDef, type Runtime } from '../registry.js';
import { normalizeFlags } from './core.js';

function target(n: CNode, rt: Runtime): { get(): string[]; set(f: string[]): void; keys: string[] } {
  if (n.args.length === 2) {
    const name = rt.str(n.args[0]);
    return {
      get: () => normalizeFlags([rt.getVar(name) ?? '']),
      set: (f) => rt.setVar(name, f.join(' ')),
      keys: normalizeFlags(rt.list(n.args[1])),
    };
  }
  return { get: () => rt.flags, set: (f) => (rt.flags = f), keys: normalizeFlags(rt.list(n.args[0])) };
}

const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

const imap4flags: ExtensionDef = {
  capabilities: ['imap4flags'],
  register(reg) {
    const ops: Record<string, (cur: string[], keys: string[]) => string[]> = {
      setflag: (_cur, keys) => keys,
      addflag: (cur, keys) => normalizeFlags([...cur, ...keys]),
      removeflag: (cur, keys) => cur.filter((f) => !keys.some((k) => same(k, f))),
    };
    for (const [name, op] of Object.entries(ops)) {
      reg.add({
        name,
        kind: 'command',
        extension: 'imap4flags',
        tags: [],
        positional: [
          { name: 'flags', kind: 'stringlist' },
          { name: 'flags', kind: 'stringlist', optional: true },
        ],
        check: checkVariableForm,
        run(n, rt) {
          const t = target(n, rt);
          t.set(op(t.get(), t.keys));
        },
      });
    }
    reg.add({
      name: 'hasflag',
      kind: 'test',
      extension: 'imap4flags',
      tags: [comparatorTag(), ...matchTags()],
      positional: [
        { name: 'flags', kind: 'stringlist' },
        { name: 'flags', kind: 'stringlist', optional: true },
      ],
      check: checkVariableForm,
      test(n, rt) {
        let values: string[];
        if (n.args.length === 2) values = normalizeFlags(rt.list(n.args[0]).map((v) => rt.getVar(v) ?? ''));
        else values = [...rt.flags];
        const keys = n.args.length === 2 ? rt.list(n.args[1]) : rt.list(n.args[0]);
        const spec = rt.matchSpec(n);
        // RFC 5232 §4: for :is/:contains/:matches each key is itself a flag list.
        const split = spec.type === 'count' || spec.type === 'value' ? keys : normalizeFlags(keys);
        return rt.match(n, values, split);
      },
    });
    reg.addTags('command', 'keep', [{ name: 'flags', arg: 'stringlist', extension: 'imap4flags' }]);
    reg.addTags('command', 'fileinto', [{ name: 'flags', arg: 'stringlist', extension: 'imap4flags' }]);
  },
};

function checkVariableForm(n: CNode, v: { has(c: string): boolean; report(m: string, l: CNode['location']): void }): void {
  if (n.args.length === 2 && !v.has('variables')) {
    v.report(`${n.name}: a variable name argument needs require "variables"`, n.args[0]!.location);
  }
}

export default imap4flags;
