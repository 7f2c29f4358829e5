// Pass: each command's and test's own compile-time checks, as its extension registered them
// (e.g. editheader refusing Received, vacation's :days range, set's variable name).
import type { CNode, ValidateCtx } from '../registry.js';
import { walk } from './build.js';

export function extensionChecksPass(nodes: CNode[], v: ValidateCtx): void {
  walk(nodes, (n) => n.spec.check?.(n, v));
}
