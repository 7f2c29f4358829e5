// RFC 5228 §5.4 envelope test (capability "envelope"): "from" is the reverse path (the null
// path matches only ""), "to" the recipient this run is for; "auth" the authenticated user.
import { addressPartTags, comparatorTag, matchTags, type ExtensionDef } from '../registry.js';
import { addressValues } from './core.js';

const PARTS = ['from', 'to', 'auth'];

const envelope: ExtensionDef = {
  capabilities: ['envelope'],
  register(reg) {
    reg.add({
      name: 'envelope',
      kind: 'test',
      extension: 'envelope',
      tags: [comparatorTag(), ...matchTags(), ...addressPartTags()],
      positional: [
        { name: 'envelope-part', kind: 'stringlist' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      check(n, v) {
        const a = n.args[0];
        if (a?.kind !== 'stringlist') return;
        for (const p of a.values) {
          if (!PARTS.includes(p.toLowerCase()) && !(v.has('variables') && p.includes('${'))) {
            v.report(`unknown envelope part "${p}" (expected "from" or "to")`, a.location);
          }
        }
      },
      test(n, rt) {
        const values: string[] = [];
        for (const part of rt.list(n.args[0]).map((p) => p.toLowerCase())) {
          const raw = part === 'from' ? rt.envelope.from : part === 'to' ? rt.envelope.to : part === 'auth' ? rt.envelope.auth : undefined;
          if (raw === undefined) continue;
          const bare = raw.replace(/^<|>$/g, '');
          if (bare === '') {
            values.push(''); // RFC 5228 §5.4: the null reverse-path is matched by ""
            continue;
          }
          values.push(...addressValues(n, rt.addresses(bare)));
        }
        return rt.match(n, values, rt.list(n.args[1]));
      },
    });
  },
};
export default envelope;
