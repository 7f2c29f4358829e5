// Actions as data and the rules that combine them: RFC 5228 §2.10.2 (implicit keep and what
// cancels it), §4 (duplicate actions: a message is filed once per mailbox, `keep` is
// `fileinto "INBOX"`, a redirect once per address), §2.10.6 (limits), RFC 5429 §2.1 (reject and
// ereject are incompatible with keep, fileinto and redirect), RFC 5230 §4.7 (one vacation),
// RFC 3894 (:copy does not cancel the implicit keep). The shapes are CONTRACT.md's `sieve test`
// JSON. A conflict throws SieveRuntimeError; the interpreter then returns no actions and the
// implicit keep (§2.10.6).
import type { Location } from './ast.js';
import type { SieveLimits } from './limits.js';
import type { HeaderField } from './message.js';
import { fieldValueForOutput } from './message.js';
import { SieveRuntimeError } from './registry.js';

export type SieveAction =
  | { type: 'keep'; flags: string[] }
  | { type: 'fileinto'; mailbox: string; flags: string[]; copy: boolean; create: boolean }
  | { type: 'redirect'; address: string; copy: boolean }
  | { type: 'reject' | 'ereject'; reason: string }
  | { type: 'discard' }
  | {
      type: 'vacation';
      seconds: number;
      subject?: string;
      from?: string;
      handle?: string;
      reason: string;
      addresses: string[];
      mime: boolean;
    };

interface Entry {
  action: SieveAction;
  location: Location;
  /** Header fields as this copy is stored (keep/fileinto), for the `stored` report. */
  headers?: HeaderField[];
}

const isInbox = (m: string) => m.toUpperCase() === 'INBOX';

function storeTarget(a: SieveAction): string | null {
  if (a.type === 'keep') return 'INBOX';
  if (a.type === 'fileinto') return isInbox(a.mailbox) ? 'INBOX' : a.mailbox;
  return null;
}

function union(a: string[], b: string[]): string[] {
  const out = [...a];
  for (const f of b) if (!out.some((x) => x.toLowerCase() === f.toLowerCase())) out.push(f);
  return out;
}

export class ActionState {
  readonly entries: Entry[] = [];
  implicitKeep = true;

  constructor(private readonly limits: SieveLimits) {}

  private conflict(message: string, loc: Location): never {
    throw new SieveRuntimeError(message, loc);
  }

  /** Adds an action, applying de-duplication and the compatibility rules. */
  add(action: SieveAction, location: Location, headers?: HeaderField[]): void {
    const has = (t: SieveAction['type']) => this.entries.some((e) => e.action.type === t);
    const isReject = action.type === 'reject' || action.type === 'ereject';
    const delivers = action.type === 'keep' || action.type === 'fileinto' || action.type === 'redirect';
    // RFC 5429 §2.1: reject/ereject cannot be combined with delivering actions, nor repeated.
    if (isReject && (has('reject') || has('ereject'))) this.conflict(`only one ${action.type} action is allowed`, location);
    if (isReject && (has('keep') || has('fileinto') || has('redirect'))) {
      this.conflict(`${action.type} cannot be combined with keep, fileinto or redirect`, location);
    }
    if (delivers && (has('reject') || has('ereject'))) {
      this.conflict(`${action.type} cannot be combined with reject or ereject`, location);
    }
    // RFC 5230 §4.7: one vacation action per run.
    if (action.type === 'vacation' && has('vacation')) this.conflict('only one vacation action is allowed', location);

    // Implicit keep cancellation (RFC 5228 §2.10.2, RFC 3894 §3).
    if (action.type === 'keep' || action.type === 'discard' || isReject) this.implicitKeep = false;
    if ((action.type === 'fileinto' || action.type === 'redirect') && !action.copy) this.implicitKeep = false;

    // De-duplication (RFC 5228 §4).
    const target = storeTarget(action);
    if (target !== null) {
      const prev = this.entries.find((e) => storeTarget(e.action) === target);
      if (prev) {
        const pa = prev.action as { flags: string[]; copy?: boolean };
        pa.flags = union(pa.flags, (action as { flags: string[] }).flags);
        if (prev.action.type === 'fileinto' && action.type === 'fileinto') prev.action.copy = prev.action.copy && action.copy;
        if (prev.action.type === 'fileinto' && action.type === 'keep') prev.action.copy = false;
        return;
      }
    }
    if (action.type === 'redirect') {
      const addr = action.address.toLowerCase();
      const prev = this.entries.find((e) => e.action.type === 'redirect' && e.action.address.toLowerCase() === addr);
      if (prev) {
        if (prev.action.type === 'redirect') prev.action.copy = prev.action.copy && action.copy;
        return;
      }
      const count = this.entries.filter((e) => e.action.type === 'redirect').length;
      if (count >= this.limits.maxRedirects) this.conflict(`too many redirect actions (limit ${this.limits.maxRedirects})`, location);
    }
    if (action.type === 'discard' && has('discard')) return;
    if (this.entries.length >= this.limits.maxActions) this.conflict(`too many actions (limit ${this.limits.maxActions})`, location);
    this.entries.push({ action, location, ...(headers ? { headers } : {}) });
  }

  list(): SieveAction[] {
    return this.entries.map((e) => e.action);
  }

  /** RFC 5293 §…: each stored copy with its headers, then the implicit keep. */
  stored(finalHeaders: HeaderField[], implicitKeep: boolean): { mailbox: string; headers: [string, string][] }[] {
    const fmt = (hs: HeaderField[]) => hs.map((h): [string, string] => [h.name, fieldValueForOutput(h)]);
    const out: { mailbox: string; headers: [string, string][] }[] = [];
    for (const e of this.entries) {
      const t = storeTarget(e.action);
      if (t !== null) out.push({ mailbox: t === 'INBOX' ? 'INBOX' : t, headers: fmt(e.headers ?? finalHeaders) });
    }
    if (implicitKeep && !out.some((o) => o.mailbox === 'INBOX')) out.push({ mailbox: 'INBOX', headers: fmt(finalHeaders) });
    return out;
  }
}
