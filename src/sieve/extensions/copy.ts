// RFC 3894 copy: :copy on redirect and fileinto; the action then does not cancel the implicit
// keep (actions.ts).
import type { ExtensionDef } from '../registry.js';

const copy: ExtensionDef = {
  capabilities: ['copy'],
  register(reg) {
    reg.addTags('command', 'redirect', [{ name: 'copy', extension: 'copy' }]);
    reg.addTags('command', 'fileinto', [{ name: 'copy', extension: 'copy' }]);
  },
};
export default copy;
