// Scanner results of one message, shared between plugins of the same transaction without giving
// one plugin another's notes: a scanner plugin records what it found against the message object
// (the same MessageAccess every data/queue hook of the transaction sees), and the gateway Sieve
// plugin reads it for RFC 5235 `spamtest`/`spamtestplus`/`virustest` (SieveHost.spamScore,
// virusLevel) and, for auth-results, its environment items vnd.postern.spf/dkim/dmarc/arc
// (RFC 5183 §4.3 vendor items). Mail delivered later to a user's own Sieve script carries the scanners' headers
// instead (X-Spam-Score, X-Virus-Status), which `sieve.spamtest`/`sieve.virustest` read.
// The map is weak: results go away with the message.
import type { MessageAccess } from '../plugin.js';

export interface ScanResults {
  /** Spam score and the score at which the scanner calls it spam (RFC 5235 §3.2 scaling). */
  spam?: { score: number; max: number; scanner: string };
  /** RFC 5235 §3.3 virustest level: 1 clean … 5 infected (0 = not tested). */
  virus?: { level: number; signature?: string; scanner: string };
  /** SPF/DKIM/DMARC/ARC results (RFC 8601 result names), for the gateway Sieve's environment items. */
  auth?: { spf: string; dkim: string; dmarc: string; arc: string };
}

const results = new WeakMap<MessageAccess, ScanResults>();

export function recordScan(message: MessageAccess, r: ScanResults): void {
  results.set(message, { ...results.get(message), ...r });
}

export function scanResults(message: MessageAccess | undefined): ScanResults | undefined {
  return message ? results.get(message) : undefined;
}
