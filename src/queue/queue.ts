// What the front ends (SMTP, LMTP, sendmail, Sieve redirect/vacation later) see of the queue.
// `accept` is the durability point: when it resolves, the message and its envelope are fsynced
// (file and folder) in the spool, and only then may the caller answer 250.
import type { Envelope, EnvelopeRecipient } from './envelope.js';

export interface RecipientOutcome {
  recipient: EnvelopeRecipient;
  /** 'delivered': in its mailbox; 'queued': spooled for later; 'failed': permanent; 'deferred': temporary. */
  status: 'delivered' | 'queued' | 'failed' | 'deferred';
  code: number;
  enhanced: string;
  text: string;
}

export interface MessageQueue {
  /** A fresh queue id (also used as the transaction id from MAIL on). */
  newId(): string;
  /**
   * Spools the message durably, then schedules delivery. `message` is the complete message as
   * it is to be queued (our Received header and any header edits already applied).
   */
  accept(id: string, envelope: Envelope, message: Buffer): Promise<void>;
  /**
   * The copies of one transaction, all or none: resolves when every copy is spooled; rejects
   * with none of them kept (nothing delivered), so the client's retry duplicates nothing.
   */
  acceptAll(copies: { id: string; envelope: Envelope; message: Buffer }[]): Promise<void>;
  /**
   * LMTP (RFC 2033): delivers to local recipients at once and reports one outcome per recipient,
   * in order. Recipients that are not local are spooled as by `accept`.
   */
  deliverNow(id: string, envelope: Envelope, message: Buffer): Promise<RecipientOutcome[]>;
  /** Scans the spool and resumes unfinished deliveries. */
  start(): Promise<void>;
  /** Stops scheduling; waits for deliveries in progress. */
  stop(): Promise<void>;
}
