// Verdicts a plugin hook returns. The first decisive verdict (anything but `next`) ends the chain
// for that stage. Codes follow RFC 5321 §4.2 and enhanced codes RFC 3463; the class of the
// enhanced code always matches the reply code's (4.x.x with 4yz, 5.x.x with 5yz).

export type Enhanced = `${2 | 4 | 5}.${number}.${number}`;

export type Verdict =
  /** No opinion: the next plugin runs. */
  | { kind: 'next' }
  /** Accept at this stage; the rest of this stage's chain is skipped. At RCPT this permits relaying. */
  | { kind: 'accept' }
  /** Permanent refusal. */
  | { kind: 'reject'; code: number; enhanced: Enhanced; text: string; disconnect?: boolean }
  /** Temporary refusal. */
  | { kind: 'tempfail'; code: number; enhanced: Enhanced; text: string; disconnect?: boolean }
  /** Answer 250 and drop the message (data, queue). */
  | { kind: 'discard'; reason?: string }
  /** Answer 250 and deliver into `folder` of each local recipient instead of INBOX (data, queue). */
  | { kind: 'quarantine'; folder: string; reason?: string }
  /**
   * Answer 250 with a new delivery plan (data, queue), as Sieve's fileinto/redirect ask:
   * `plan` maps a recipient address of the transaction (lower-cased) to the folders it is
   * delivered into ("INBOX" for the mailbox itself; [] drops that recipient); recipients not in
   * the plan keep their delivery. `redirect` addresses become new recipients (the envelope sender
   * is kept; remote ones are relayed by the queue). Nothing left to deliver = discard.
   */
  | {
      kind: 'reroute';
      plan?: Record<string, string[]>;
      redirect?: string[];
      reason?: string;
      /**
       * Recipients (lower-cased) refused on their own, with their reply (LMTP: RFC 2033 §4.2, one
       * reply per recipient). They are removed from the delivery; the others go on.
       */
      refuse?: Record<string, { code: number; enhanced: Enhanced; text: string }>;
      /**
       * Header edits for one recipient's copy only (lower-cased address, or a redirect address),
       * applied on top of the shared message: recipients with different edits get separate
       * copies in the queue.
       */
      copies?: Record<string, HeaderEdit[]>;
    };

/** One header edit of a per-recipient copy, as HeaderEditor (plugin.ts) performs it. */
export type HeaderEdit = { op: 'add'; name: string; value: string; where: 'top' | 'bottom' } | { op: 'remove'; name: string; index?: number };

export type VerdictKind = Verdict['kind'];

export const next = (): Verdict => ({ kind: 'next' });
export const accept = (): Verdict => ({ kind: 'accept' });
export const reject = (code: number, enhanced: Enhanced, text: string, opts: { disconnect?: boolean } = {}): Verdict => ({
  kind: 'reject',
  code,
  enhanced,
  text,
  ...opts,
});
export const tempfail = (enhanced: Enhanced, text: string, code = 451, opts: { disconnect?: boolean } = {}): Verdict => ({
  kind: 'tempfail',
  code,
  enhanced,
  text,
  ...opts,
});
export const discard = (reason?: string): Verdict => ({ kind: 'discard', reason });
export const quarantine = (folder: string, reason?: string): Verdict => ({ kind: 'quarantine', folder, reason });

export const reroute = (opts: Omit<Extract<Verdict, { kind: 'reroute' }>, 'kind'>): Verdict => ({ kind: 'reroute', ...opts });

export function isDecisive(v: Verdict): boolean {
  return v.kind !== 'next';
}
