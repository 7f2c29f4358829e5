// RFC 5463 ihave: the `ihave` test (true when every named capability is available) and the
// `error` command (a runtime error with the script's message). validate/build.ts does not
// validate a block guarded by `if ihave` of unavailable capabilities (§4).
import type { ExtensionDef } from '../registry.js';

const ihave: ExtensionDef = {
  capabilities: ['ihave'],
  register(reg) {
    reg.add({
      name: 'ihave',
      kind: 'test',
      extension: 'ihave',
      tags: [],
      positional: [{ name: 'capabilities', kind: 'stringlist' }],
      test(n) {
        const caps = n.args[0]?.kind === 'stringlist' ? n.args[0].values : [];
        return caps.every((c) => reg.capabilities.has(c.toLowerCase()));
      },
    });
    reg.add({
      name: 'error',
      kind: 'command',
      extension: 'ihave',
      tags: [],
      positional: [{ name: 'message', kind: 'string' }],
      run(n, rt) {
        rt.fail(`error: ${rt.str(n.args[0])}`, n.location);
      },
    });
  },
};
export default ihave;
