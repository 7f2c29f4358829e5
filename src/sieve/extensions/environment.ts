// RFC 5183 environment test: [COMPARATOR] [MATCH-TYPE] <name> <key-list>. Items come from the
// run options (domain, host, location, phase, remote-host, remote-ip, …); "name" and "version"
// describe this implementation. An unknown item makes the test false (§4).
import { comparatorTag, matchTags, type ExtensionDef } from '../registry.js';

export const IMPLEMENTATION = { name: 'Postern', version: '0.1.0' };

const environment: ExtensionDef = {
  capabilities: ['environment'],
  register(reg) {
    reg.add({
      name: 'environment',
      kind: 'test',
      extension: 'environment',
      tags: [comparatorTag(), ...matchTags()],
      positional: [
        { name: 'name', kind: 'string' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      test(n, rt) {
        const name = rt.str(n.args[0]).toLowerCase();
        const items: Record<string, string> = { ...IMPLEMENTATION, ...rt.environment };
        const v = items[name];
        if (v === undefined) return false;
        return rt.match(n, [v], rt.list(n.args[1]));
      },
    });
  },
};
export default environment;
