// RFC 5233 subaddress: :user and :detail address parts (separator "+", see core.ts). The tags
// are in registry.ts's addressPartTags.
import type { ExtensionDef } from '../registry.js';

const subaddress: ExtensionDef = { capabilities: ['subaddress'], register() {} };
export default subaddress;
