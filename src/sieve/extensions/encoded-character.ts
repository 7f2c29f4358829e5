// RFC 5228 §2.4.2.4 encoded-character: "${hex:…}" and "${unicode:…}" in strings, decoded at
// compile time by validate/build.ts when the script requires this capability.
import type { ExtensionDef } from '../registry.js';

const encodedCharacter: ExtensionDef = { capabilities: ['encoded-character'], register() {} };
export default encodedCharacter;
