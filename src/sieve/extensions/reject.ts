// RFC 5429: reject (refuse or send an MDN-style refusal) and ereject (refuse at the protocol
// level when possible). Both cancel the implicit keep; actions.ts enforces their
// incompatibility with keep, fileinto and redirect (§2.1).
import type { ExtensionDef } from '../registry.js';

const reject: ExtensionDef = {
  capabilities: ['reject', 'ereject'],
  register(reg) {
    for (const name of ['reject', 'ereject'] as const) {
      reg.add({
        name,
        kind: 'command',
        extension: name,
        tags: [],
        positional: [{ name: 'reason', kind: 'string' }],
        run(n, rt) {
          rt.actions.add({ type: name, reason: rt.str(n.args[0]) }, n.location);
        },
      });
    }
  },
};
export default reject;
