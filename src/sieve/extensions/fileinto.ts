// RFC 5228 §4.1 fileinto (capability "fileinto"). Flags (RFC 5232), :copy (RFC 3894) and
// :create (RFC 5490) are added by their own modules.
import type { ExtensionDef } from '../registry.js';
import { flagsFor, snapshot } from './core.js';

const fileinto: ExtensionDef = {
  capabilities: ['fileinto'],
  register(reg) {
    reg.add({
      name: 'fileinto',
      kind: 'command',
      extension: 'fileinto',
      tags: [],
      positional: [{ name: 'mailbox', kind: 'string' }],
      check(n, v) {
        const a = n.args[0];
        if (a?.kind === 'string' && a.value === '') v.report('fileinto: empty mailbox name', a.location);
      },
      run(n, rt) {
        const mailbox = rt.str(n.args[0]);
        if (mailbox === '') rt.fail('fileinto: empty mailbox name', n.location);
        rt.actions.add(
          { type: 'fileinto', mailbox, flags: flagsFor(rt, n), copy: n.tags.has('copy'), create: n.tags.has('create') },
          n.location,
          snapshot(rt),
        );
      },
    });
  },
};
export default fileinto;
