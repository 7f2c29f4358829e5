// Pass: `require` (RFC 5228 §3.2). Require commands come first, only at the top level, each
// naming capabilities this engine supports; they fill the script's capability set that later
// passes consult ("require-declared").
import type { ScriptNode, Location } from '../ast.js';
import type { Registry } from '../registry.js';

/** Capabilities that include others (RFC 6131 §2, RFC 5235 §3.2). */
const IMPLIES: Record<string, string[]> = {
  'vacation-seconds': ['vacation'],
  spamtestplus: ['spamtest'],
};

/** RFC 5228 §2.7.3: every implementation has these; a site cannot turn them off. */
const ALWAYS = new Set(['comparator-i;octet', 'comparator-i;ascii-casemap']);

export function requirePass(ast: ScriptNode, registry: Registry, enabled: Set<string> | undefined, report: (msg: string, loc: Location) => void): Set<string> {
  const required = new Set<string>();
  let seenOther = false;
  const visit = (cmds: ScriptNode['commands'], top: boolean) => {
    for (const c of cmds) {
      if (c.name === 'require') {
        if (!top || seenOther) {
          report("'require' is only allowed at the start of the script, before any other command", c.nameLocation);
        }
        const arg = c.args[0];
        if (c.args.length !== 1 || !arg || (arg.type !== 'string' && arg.type !== 'stringlist')) {
          report("'require' needs one string or string list of capabilities", c.nameLocation);
          continue;
        }
        const items = arg.type === 'string' ? [arg] : arg.items;
        for (const s of items) {
          const cap = s.value.toLowerCase();
          if (!registry.capabilities.has(cap)) {
            report(`unsupported extension "${s.value}"`, s.location);
          } else if (enabled && !enabled.has(cap) && !ALWAYS.has(cap)) {
            report(`extension "${s.value}" is not enabled here (sieve.extensions)`, s.location);
          } else {
            required.add(cap);
            for (const x of IMPLIES[cap] ?? []) required.add(x);
          }
        }
      } else {
        seenOther = true;
        if (c.block) visit(c.block, false);
      }
    }
  };
  visit(ast.commands, true);
  // Implied capabilities: comparators every implementation has (RFC 5228 §2.7.3).
  required.add('comparator-i;octet');
  required.add('comparator-i;ascii-casemap');
  return required;
}
