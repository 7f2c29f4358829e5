// The plugin contract. A plugin is a name, a zod schema for its options, an optional `init`
// (once per chain load, returns long-lived state) and typed async hooks in protocol order:
//
//   connect → helo → auth → mail → rcpt (once per recipient) → data → queue
//   and, after the message left our hands: delivered / deferred / bounced (observers; no verdict)
//
// A hook returns a Verdict (verdict.ts). The runner (runner.ts) gives each hook a deadline and an
// AbortSignal; a throw or a timeout is a 451 4.3.0, unless the entry's `on_error` is fail-open.
// Options that name files may also be checked against them (`checkFiles`) before any init, by
// the loader and by `postern check-config` alike.
// A plugin sees only its HookContext: never the server, the socket, or another plugin's state.
import type { z } from 'zod';
import type { Logger } from 'pino';
import type { ParsedMail } from 'mailparser';
import type { Directory } from '../directory/directory.js';
import type { Store } from '../store/store.js';
import type { Envelope, EnvelopeRecipient, ListenerKind } from '../queue/envelope.js';
import type { Resolver } from '../dns/resolver.js';
import type { Verdict } from './verdict.js';
import type { ForwardedClientInfo } from './origin.js';

export type { ForwardedClientInfo } from './origin.js';

/**
 * Hook stages in protocol order. `connect` runs when a client connects and again when a trusted
 * peer hands the session to another client with XCLIENT (with the connection's notes emptied),
 * so it may run twice on one connection, each time for the client in `session.remoteAddress`.
 */
export type Stage = 'connect' | 'helo' | 'auth' | 'mail' | 'rcpt' | 'data' | 'queue';
export type ObserverStage = 'delivered' | 'deferred' | 'bounced';
export const STAGES: readonly Stage[] = ['connect', 'helo', 'auth', 'mail', 'rcpt', 'data', 'queue'];

/**
 * Connection facts. `relaying` and `authUser` are the only fields plugins change.
 *
 * `remoteAddress`, `remotePort`, `clientHostname` and `helo` are the connection's client: the
 * peer, or the client a trusted peer handed the session to with XCLIENT (or named in a PROXY
 * header). Policy is decided on them. A client named with XFORWARD is in `forwarded` instead;
 * originClient() (origin.ts) gives the client a message came from, for whatever describes it.
 */
export interface SessionInfo {
  id: string;
  listener: ListenerKind;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** Reverse DNS name, when known. */
  clientHostname?: string;
  helo?: string;
  /**
   * The original client a trusted peer (a content filter handing mail back) named with XFORWARD,
   * for the current mail transaction only: RSET, a new greeting, STARTTLS, XCLIENT and the end of
   * DATA remove it. For describing the message's origin (Received, logs, spam scanners, SPF,
   * Sieve's remote-ip), never for policy: relaying, access lists, DNSBL, greylisting, rate limits
   * and AUTH throttling stay with `remoteAddress`, as in Postfix.
   */
  forwarded?: ForwardedClientInfo;
  secure: boolean;
  /** Canonical address of the authenticated user. */
  authUser?: string;
  /** True when this client may relay to foreign domains (trusted network or authenticated). */
  relaying: boolean;
  /**
   * A REST dry-run, not traffic: no metric counts it, and the built-in plugins store nothing
   * for it (no greylist triplet, no rate-limit count).
   */
  dryRun?: boolean;
}

/** SASL attempt facts, for the `auth` stage only. */
export interface AuthAttempt {
  method: 'PLAIN' | 'LOGIN' | string;
  username: string;
  password: string;
}

/** Header list as it will be queued: edits made here are applied to the spooled message. */
export interface HeaderEditor {
  /** All headers in order, [name, value] with value unfolded. */
  list(): [string, string][];
  get(name: string): string[];
  /** Adds at the top (default, like a trace field) or at the end of the header block. */
  add(name: string, value: string, where?: 'top' | 'bottom'): void;
  /** Removes every occurrence (or only the n-th, 0-based) of `name`; returns how many went. */
  remove(name: string, index?: number): number;
}

/** The message at the data and queue stages. Parsing is lazy: only a plugin that asks pays for it. */
export interface MessageAccess {
  /** Size in octets as received (CRLF line ends, dots unstuffed). */
  size: number;
  headers: HeaderEditor;
  /** The message bytes as received (before header edits). */
  raw(): Promise<Buffer>;
  /** The message parsed by mailparser; parsed once per transaction and shared. */
  parsed(): Promise<ParsedMail>;
}

export interface TransactionInfo {
  /** Queue id once known (assigned at MAIL). */
  id: string;
  mailFrom: string;
  /** Recipients accepted so far. */
  recipients: EnvelopeRecipient[];
  envelope: Envelope;
}

export interface HookContext<C = unknown, S = unknown> {
  plugin: string;
  config: C;
  /** What `init` returned. */
  state: S;
  session: SessionInfo;
  /** Present from MAIL on. */
  tx?: TransactionInfo;
  /** The recipient under test, at the rcpt stage. */
  rcpt?: EnvelopeRecipient;
  /** The SASL attempt, at the auth stage. */
  auth?: AuthAttempt;
  /** The message, at the data and queue stages. */
  message?: MessageAccess;
  /** This plugin's scratch for the current transaction (or connection, before MAIL). */
  notes: Record<string, unknown>;
  log: Logger;
  dns: Resolver;
  store: Store;
  directory: Directory;
  /** Aborted when the hook's deadline passes or the client goes away. */
  signal: AbortSignal;
  /**
   * Adds an entry of the plugin's own to the transaction trace, before the one the runner adds
   * for the hook's verdict (e.g. one per Sieve rule that acted). Absent outside the runner.
   */
  trace?: (e: PluginTraceEntry) => void;
}

/** A Sieve test that matched: its line, name, the header(s) it read and the value that matched. */
export interface TraceMatch {
  line: number;
  test: string;
  header?: string;
  value?: string;
}

/** What a plugin may say in its own trace entries (types.ts TraceEntry fills in the rest). */
export interface PluginTraceEntry {
  verdict: import('./verdict.js').VerdictKind | 'error';
  rule?: string;
  line?: number;
  /** The version of the rule set the rule came from (admin rules kept in the store). */
  version?: string;
  /** The tests that matched on the way to this entry's action (Sieve). */
  matched?: TraceMatch[];
  detail?: string;
  rcpt?: string;
  code?: number;
  enhanced?: string;
}

/** Observer facts, after delivery was attempted for one recipient. */
export interface DeliveryEvent {
  queueId: string;
  recipient: string;
  /** Where it went: "maildir:/path", "smtp://host", … */
  destination?: string;
  /** The reply or error text. */
  detail?: string;
}

export type Hook<C, S> = (ctx: HookContext<C, S>) => Promise<Verdict>;
export type Observer<C, S> = (ev: DeliveryEvent, ctx: { config: C; state: S; log: Logger; store: Store }) => Promise<void>;

export interface InitContext<C> {
  config: C;
  store: Store;
  directory: Directory;
  log: Logger;
  dns: Resolver;
  /** The whole parsed config, read-only, for plugins that need shared keys (relay networks, domains). */
  global: import('../config/load.js').Config;
}

/** What `checkFiles` found wrong, at a key path within the plugin's options (['scripts', 0]). */
export interface OptionProblem {
  path: (string | number)[];
  message: string;
}

export interface PluginDefinition<Schema extends z.ZodType = z.ZodType, S = unknown> {
  /** Kebab-case; equals the folder name for built-ins. */
  name: string;
  config: Schema;
  /**
   * Checks the (valid) options against the files they name, e.g. scripts that must exist and
   * compile, opening nothing else and changing nothing. `postern check-config` runs it, and the
   * loader before any plugin's init, so start refuses exactly what check-config reports, with the
   * same key paths. Relative paths are relative to `global.baseDir`. Returns every problem found,
   * [] when all is well; a throw counts as one problem at the entry.
   */
  checkFiles?: (ctx: { config: z.infer<Schema>; global: import('../config/load.js').Config }) => Promise<OptionProblem[]> | OptionProblem[];
  init?: (ctx: InitContext<z.infer<Schema>>) => Promise<S> | S;
  /** Called once when the chain is closed (shutdown or reload); closes what init opened. */
  close?: (state: S) => Promise<void> | void;
  hooks: Partial<Record<Stage, Hook<z.infer<Schema>, S>>> & Partial<Record<ObserverStage, Observer<z.infer<Schema>, S>>>;
  /**
   * Set (to the reason) by a plugin whose failure must never let the chain go on without it:
   * `on_error: fail-open` is then a config error. relay-acl: a later plugin's accept at RCPT
   * permits relaying.
   */
  failOpenRefused?: string;
}

/** Identity function that gives a plugin its types. */
export function definePlugin<Schema extends z.ZodType, S = undefined>(def: PluginDefinition<Schema, S>): PluginDefinition<Schema, S> {
  return def;
}
