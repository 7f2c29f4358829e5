// RFC 5231 relational (:count, :value with gt/ge/lt/le/eq/ne; the tags are in registry.ts's
// matchTags and the logic in match.ts) and RFC 4790 §9.1 comparator i;ascii-numeric.
import type { ExtensionDef } from '../registry.js';

export const relational: ExtensionDef = { capabilities: ['relational'], register() {} };
export const asciiNumeric: ExtensionDef = { capabilities: ['comparator-i;ascii-numeric'], register() {} };
