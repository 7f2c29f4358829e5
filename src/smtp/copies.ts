// Per-recipient copies of one message. A `reroute` verdict may give some recipients header edits
// of their own (Sieve editheader at the gateway, where each recipient's rules ran separately,
// RFC 5293); those recipients cannot share the spooled bytes with the others. splitCopies groups
// the recipients by their edits: recipients without edits keep the shared message and the
// transaction's queue id, each other group gets its own rendering and a queue id of its own.
//
// Standards: RFC 5293 (editheader), RFC 5322 §2.2 (header fields, via pipeline/message.ts).
// Config keys read: none.
import type { HeaderEdit } from '../pipeline/verdict.js';
import type { HeaderEditor } from '../pipeline/plugin.js';
import type { EnvelopeRecipient } from '../queue/envelope.js';

export interface MessageCopy {
  id: string;
  recipients: EnvelopeRecipient[];
  bytes: Buffer;
  /** The edits this copy carries beyond the shared message (none for the shared copy). */
  edits: HeaderEdit[];
}

/** Performs header edits in order on a HeaderEditor. */
export function applyEdits(editor: HeaderEditor, edits: HeaderEdit[]): void {
  for (const e of edits) {
    if (e.op === 'add') editor.add(e.name, e.value, e.where);
    else editor.remove(e.name, e.index);
  }
}

/**
 * Groups `recipients` (in order) by the edits `copies` gives them (keyed by lower-cased address).
 * `render(edits)` makes the bytes of a copy from the shared message; `newId()` names every copy
 * but the first. With no per-recipient edits the result is one copy: the shared message.
 */
export function splitCopies(
  recipients: EnvelopeRecipient[],
  shared: Buffer,
  firstId: string,
  copies: Record<string, HeaderEdit[]> | undefined,
  render: (edits: HeaderEdit[]) => Buffer,
  newId: () => string,
): MessageCopy[] {
  const groups = new Map<string, MessageCopy>();
  for (const r of recipients) {
    const edits = copies?.[r.address.toLowerCase()] ?? [];
    const key = JSON.stringify(edits);
    let g = groups.get(key);
    if (!g) {
      g = { id: groups.size === 0 ? firstId : newId(), recipients: [], bytes: edits.length === 0 ? shared : render(edits), edits };
      groups.set(key, g);
    }
    g.recipients.push(r);
  }
  return [...groups.values()];
}
