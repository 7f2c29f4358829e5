// RFC 5490 §3 mailbox: the mailboxexists test (asks the host; default: only INBOX exists) and
// :create on fileinto (create the mailbox when missing).
import type { ExtensionDef } from '../registry.js';

const mailbox: ExtensionDef = {
  capabilities: ['mailbox'],
  register(reg) {
    reg.addTags('command', 'fileinto', [{ name: 'create', extension: 'mailbox' }]);
    reg.add({
      name: 'mailboxexists',
      kind: 'test',
      extension: 'mailbox',
      tags: [],
      positional: [{ name: 'mailbox-names', kind: 'stringlist' }],
      async test(n, rt) {
        for (const name of rt.list(n.args[0])) {
          const exists = rt.host.mailboxExists ? await rt.host.mailboxExists(name) : name.toUpperCase() === 'INBOX';
          if (!exists) return false;
        }
        return true;
      },
    });
  },
};
export default mailbox;
