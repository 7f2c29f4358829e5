// What the SMTP front end and the REST dry-run see of the plugin host: run one stage of the chain
// for a session/transaction, get the deciding verdict plus a trace of every plugin that ran.
import type { DeliveryEvent, AuthAttempt, MessageAccess, ObserverStage, SessionInfo, Stage, TransactionInfo } from './plugin.js';
import type { EnvelopeRecipient } from '../queue/envelope.js';
import type { Verdict, VerdictKind } from './verdict.js';

/** One line of the per-transaction trace (returned by the REST dry-run, logged per transaction). */
export interface TraceEntry {
  stage: Stage;
  plugin: string;
  verdict: VerdictKind | 'error' | 'timeout';
  ms: number;
  code?: number;
  enhanced?: string;
  /** Reply text or error reason (the reason is for the log and the trace, not the client). */
  detail?: string;
  /** Recipient the entry is about, at the rcpt stage (or the recipient a rule ran for). */
  rcpt?: string;
  /** The rule (e.g. the Sieve script name) a plugin's own entry is about, and its line. */
  rule?: string;
  line?: number;
  /** The rule set version the rule belongs to (admin rules from the store). */
  version?: string;
  /** The Sieve tests that matched on the way to this entry's action. */
  matched?: import('./plugin.js').TraceMatch[];
}

export interface StageInput {
  session: SessionInfo;
  tx?: TransactionInfo;
  rcpt?: EnvelopeRecipient;
  auth?: AuthAttempt;
  message?: MessageAccess;
  /**
   * Per-plugin scratch, keyed by plugin name. The caller owns it: one map per connection for
   * connect/helo/auth, a fresh one per transaction from MAIL on (copied from the connection's).
   */
  notes: Map<string, Record<string, unknown>>;
  /** Aborted when the client disconnects; the runner adds its own per-hook deadline. */
  signal?: AbortSignal;
}

export interface StageResult {
  /** The deciding verdict, or `next` when no plugin decided. Errors already mapped (451 4.3.0). */
  verdict: Verdict;
  trace: TraceEntry[];
}

export interface Pipeline {
  /** Plugin names in chain order. */
  readonly names: readonly string[];
  /** True when some plugin has a hook for this stage (lets the caller skip work, e.g. parsing). */
  has(stage: Stage): boolean;
  run(stage: Stage, input: StageInput): Promise<StageResult>;
  /** Observers never change anything; their errors are logged and swallowed. */
  observe(stage: ObserverStage, ev: DeliveryEvent): Promise<void>;
  close(): Promise<void>;
}
