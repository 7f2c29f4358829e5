// RFC 7352 duplicate test: [:handle] [:header <name> | :uniqueid <id>] [:seconds] [:last].
// The host remembers ids (the store in the daemon, memory in `sieve test`); without a host memory
// nothing is a duplicate. Without an id (no Message-ID) the test is false (§3.1).
import { headersNamed, unfold } from '../message.js';
import type { ExtensionDef } from '../registry.js';

export const DEFAULT_DUPLICATE_SECONDS = 7 * 86400;
export const MAX_DUPLICATE_SECONDS = 30 * 86400;

const duplicate: ExtensionDef = {
  capabilities: ['duplicate'],
  register(reg) {
    reg.add({
      name: 'duplicate',
      kind: 'test',
      extension: 'duplicate',
      tags: [
        { name: 'handle', arg: 'string' },
        { name: 'header', arg: 'string', group: 'id' },
        { name: 'uniqueid', arg: 'string', group: 'id' },
        { name: 'seconds', arg: 'number' },
        { name: 'last' },
      ],
      positional: [],
      async test(n, rt) {
        let id: string | undefined = rt.tagStr(n, 'uniqueid');
        if (id === undefined) {
          const f = headersNamed(rt.headers, rt.tagStr(n, 'header') ?? 'message-id')[0];
          id = f ? unfold(f.raw) : undefined;
        }
        if (id === undefined || id === '') return false;
        const secTag = n.tags.get('seconds')?.value;
        const seconds = Math.min(secTag?.kind === 'number' ? secTag.value : DEFAULT_DUPLICATE_SECONDS, MAX_DUPLICATE_SECONDS);
        if (!rt.host.duplicate) return false;
        return await rt.host.duplicate({ handle: rt.tagStr(n, 'handle') ?? '', id, seconds, last: n.tags.has('last') });
      },
    });
  },
};
export default duplicate;
