// The regex match type (draft-ietf-sieve-regex-01, as Pigeonhole implements it): :regex with
// POSIX extended expressions, run on the linear-time engine in ../regex.ts. The tag is in
// registry.ts's matchTags; invalid expressions are compile errors (validate/match.ts).
import type { ExtensionDef } from '../registry.js';

const regex: ExtensionDef = { capabilities: ['regex'], register() {} };
export default regex;
