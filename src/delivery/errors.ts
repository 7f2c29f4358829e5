// Delivery failures as data: temporary (retry with backoff, 4xx for LMTP) or permanent (the
// recipient is marked failed, 5xx for LMTP). Reply codes per RFC 5321 §4.2, enhanced codes per
// RFC 3463. `text` is for the client; the cause (file system error, …) is for the log only.
//
// Config keys: none.
import type { StoredCopy } from './stored-copy.js';

export class DeliveryError extends Error {
  /**
   * The copy is in the mailbox already, but its folder could not be fsynced: a retry under the
   * same queue id finds it (maildir.ts). The client must not be asked to send the message again.
   */
  readonly stored: boolean;
  /**
   * Copies this delivery stored before it failed (a Sieve plan's earlier stores, a copy whose
   * folder fsync failed): what a caller that must take the delivery back removes (queue/manager.ts).
   */
  readonly copies: StoredCopy[];

  constructor(
    readonly temporary: boolean,
    readonly code: number,
    readonly enhanced: string,
    readonly text: string,
    opts: { cause?: unknown; stored?: boolean; copies?: StoredCopy[] } = {},
  ) {
    super(`${enhanced} ${text}`, { cause: opts.cause });
    this.name = 'DeliveryError';
    this.stored = opts.stored === true;
    this.copies = opts.copies ?? [];
  }
}

export const DeliveryErrors = {
  /** RFC 3463 X.2.2: mailbox full (quota). */
  mailboxFull: (cause?: unknown) => new DeliveryError(true, 452, '4.2.2', 'Mailbox full', { cause }),
  /** RFC 3463 X.3.1: mail system full (the disk). */
  systemFull: (cause?: unknown) => new DeliveryError(true, 452, '4.3.1', 'Mail system full', { cause }),
  /** RFC 3463 X.3.0: any other local trouble. */
  localError: (cause?: unknown) => new DeliveryError(true, 451, '4.3.0', 'Local delivery error, try again later', { cause }),
  /**
   * X.3.0 too, for a copy in place whose folder could not be fsynced (`stored`); `copies`: the
   * copy, when this delivery wrote it.
   */
  notSynced: (cause?: unknown, copies: StoredCopy[] = []) => new DeliveryError(true, 451, '4.3.0', 'Local delivery error, try again later', { cause, stored: true, copies }),
  /** RFC 3463 X.2.4 would be for lists; X.2.0 for a mailbox we could not lock in time. */
  locked: (cause?: unknown) => new DeliveryError(true, 451, '4.2.0', 'Mailbox busy, try again later', { cause }),
  /** RFC 3463 X.1.1: no such user (e.g. deleted while the message waited). */
  unknownUser: () => new DeliveryError(false, 550, '5.1.1', 'No such user'),
  /** RFC 3463 X.2.0: the folder name a rule asked for cannot be a mailbox. */
  badFolder: (cause?: unknown) => new DeliveryError(false, 550, '5.2.0', 'Invalid mailbox folder', { cause }),
};

/** Maps a file system error to a temporary delivery error. */
export function fromFsError(e: unknown): DeliveryError {
  if (e instanceof DeliveryError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EDQUOT') return DeliveryErrors.mailboxFull(e);
  if (code === 'ENOSPC') return DeliveryErrors.systemFull(e);
  return DeliveryErrors.localError(e);
}
