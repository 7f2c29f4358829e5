// sieve: the gateway ("admin rules") context of Sieve (RFC 5228). At the data stage the message
// runs through the admin scripts: first the files of `scripts` (relative to the config file's
// folder), then the active rules kept in the store (hash `sieve:rules`, name → script text, and
// `sieve:rules:meta`, their stage, position and active flag, both written by the REST API) in
// their order (sieve/rule-order.ts: name order unless ordered otherwise); inactive rules do not
// run. Each script is compiled once and cached until it changes: files are stat'ed at most once a
// second (mtime and size), store rules are re-read after a change event on the `rules` channel.
// A file that is missing or does not compile is a config problem at its key path
// (`plugins.N.sieve.scripts.I`), found by `checkFiles` for check-config and before init at start
// (the daemon does not start); one that stops compiling later, or a bad store rule, is logged
// (plugin.sieve.compile_error) and the last good version (or nothing) runs instead. When the
// store cannot be read, the last rule set read keeps running.
//
// A transaction is pinned to the rule set current at its MAIL command: RCPT and DATA run the
// scripts (and the rule set version) taken then, even when a change lands in between, so a
// transaction never sees half of one version and half of another. The version is a trace entry
// of the mail stage (and so in the smtp.transaction log line) and is on every rule's entry.
//
// Each accepted recipient gets its own run (envelope "to" is that recipient, RFC 5228 §5.4), as
// Pigeonhole does per recipient. The scripts of one run follow each other while the implicit keep
// stands (RFC 5228 §2.10.2); the first script that cancels it (reject, discard, keep, fileinto or
// redirect without :copy) ends the run. A later script sees the header edits of the earlier ones.
//
// The scripts at the head of the list that ask only envelope questions (sieve/analyze.ts: only
// envelope tests and constants) also run at RCPT, before the message exists: the files while they
// are envelope-only, then, when all of them are, the store rules of stage rcpt (rule-order.ts
// gives that stage only to the envelope-only rules that lead the store rules). A reject there is
// 550 5.7.1 for that RCPT. This never changes the outcome of running every script in order at
// DATA: nothing before such a script reads the message, so the same run at DATA would reach it
// with the same envelope and decide the same way (see `early`).
//
// Outcome → SMTP (the deciding verdict, one per message):
//   reject / ereject (RFC 5429 §2.1-2.2) → 550 5.7.1 <reason>. SMTP: for the whole message (any
//       recipient's refusal refuses it: one DATA has one reply). LMTP: per recipient (RFC 2033
//       §4.2, `reroute` with `refuse`), the others are delivered.
//   discard for every recipient → `discard` (250, nothing kept).
//   fileinto / keep / redirect → `reroute`: each recipient into its folders (fileinto :copy keeps
//       INBOX too), redirect addresses become recipients (remote ones are relayed by the queue).
//   addheader / deleteheader (RFC 5293) → the queued message is edited (ctx.message.headers)
//       when every recipient's run made the same edits; otherwise each recipient's copy gets its
//       own (`reroute` with `copies`, queued separately) and a redirect the redirecting one's.
//   keep / nothing → `next`.
//   vacation → not performed at the gateway (it belongs to a user's script); traced.
//   replace / enclose (RFC 5703) → not performed at the gateway (it edits headers only); traced.
// Every action is a trace entry: rule = script name, line, detail = the action.
//
// Host facts: every folder "exists" (delivery creates it); the duplicate test remembers ids in the
// store (sieve:duplicate:gw:<hash>, TTL = :seconds); include reads another store rule (:global)
// or NAME.sieve next to the first script file. Environment: location "MTA", phase "during".
// spamtest/virustest read the results of scanner plugins earlier in the chain (scanner/results.ts);
// auth-results' findings are the environment items vnd.postern.spf, .dkim, .dmarc and .arc.
// Config keys read: scripts, store_rules; global `sieve` (limits, vacation, spamtest) and
// `hostname`, `baseDir`.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { definePlugin, type HeaderEditor, type HookContext, type OptionProblem } from '../../src/pipeline/plugin.js';
import { originClient } from '../../src/pipeline/origin.js';
import { discard, next, reject, reroute, type HeaderEdit, type Verdict, type VerdictKind } from '../../src/pipeline/verdict.js';
import { applyEdits } from '../../src/smtp/copies.js';
import { asksOnlyEnvelope } from '../../src/sieve/analyze.js';
import { orderRules, parseMeta, type RuleMeta, type RuleStage } from '../../src/sieve/rule-order.js';
import type { Config } from '../../src/config/load.js';
import type { Store } from '../../src/store/store.js';
import { logEvent } from '../../src/log/logger.js';
import { compile, type CompiledScript } from '../../src/sieve/compile.js';
import { compileOptions } from '../../src/sieve/config.js';
import { run, type SieveHost, type SieveResult } from '../../src/sieve/interpret.js';
import { splitMessage, unfold, type HeaderField } from '../../src/sieve/message.js';
import type { SieveAction } from '../../src/sieve/actions.js';
import { describeAction } from '../../src/cli/sieve.js';
import { renderHeaders } from '../../src/delivery/sieve.js';
import { scanResults } from '../../src/pipeline/scanner/results.js';
import { configSchema, type SieveGatewayConfig } from './config.js';

export const RULES_KEY = 'sieve:rules';
/** Stage, position and activation of each store rule (src/api/rules-repository.ts). */
export const RULES_META_KEY = 'sieve:rules:meta';
export const RULES_CHANNEL = 'rules';
/** The live version of the store rules (src/api/rules-repository.ts); traced with each rule. */
export const RULES_VERSION_KEY = 'sieve:rules:version';
const STAT_INTERVAL_MS = 1000;

interface Script {
  name: string;
  compiled: CompiledScript;
  /** For store rules: the rule set version (`sieve:rules:version`, written by the REST API). */
  version?: string;
  /** For store rules: the stage they belong to (files have none: see `early`). */
  stage?: RuleStage;
}

/** What one transaction runs: the scripts in order and the store rules' version, if any. */
export interface PinnedRules {
  scripts: Script[];
  version?: string;
}

interface FileScript extends Script {
  path: string;
  version: string;
}

/** The scripts to run, kept compiled; see the header for when they are reloaded. */
export class RuleSet {
  private files: FileScript[] = [];
  private lastStat = 0;
  private storeRules: PinnedRules | null = null;
  /** The last store rules read, served when the store cannot be read. */
  private lastGood: PinnedRules | null = null;
  /** Bumped by each change event: a read that began before one must not be cached after it. */
  private generation = 0;
  private readonly byText = new Map<string, CompiledScript | null>();
  private unsubscribe: (() => void) | null = null;

  constructor(
    private readonly paths: string[],
    private readonly storeRulesOn: boolean,
    private readonly store: Store,
    private readonly global: Config,
    private readonly log: Logger,
  ) {}

  private compile(text: string, name: string): CompiledScript | null {
    const key = createHash('sha256').update(text).digest('hex');
    if (this.byText.has(key)) return this.byText.get(key)!;
    const r = compile(text, compileOptions(this.global.sieve));
    if (!r.ok) logEvent(this.log, 'error', 'plugin.sieve.compile_error', { rule: name, errors: r.errors.slice(0, 10) }, `${name}: does not compile; ${r.errors.map((e) => `${e.line}:${e.column}: ${e.message}`).join('; ')}`);
    const c = r.ok ? r.script : null;
    if (this.byText.size > 1000) this.byText.clear();
    this.byText.set(key, c);
    return c;
  }

  /** Loads every file; throws with FILE:LINE:COL messages when one does not compile. */
  async init(): Promise<void> {
    const problems: string[] = [];
    for (const path of this.paths) {
      const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
      const r = compile(text, compileOptions(this.global.sieve));
      if (!r.ok) {
        problems.push(...r.errors.map((e) => `${path}:${e.line}:${e.column}: ${e.message}`));
        continue;
      }
      this.files.push({ name: basename(path), path, version: `${st.mtimeMs}:${st.size}`, compiled: r.script });
    }
    if (problems.length) throw new Error(problems.join('\n'));
    this.lastStat = Date.now();
    if (this.storeRulesOn)
      this.unsubscribe = this.store.subscribe(RULES_CHANNEL, () => {
        this.generation++;
        this.storeRules = null;
      });
  }

  close(): void {
    this.unsubscribe?.();
  }

  private async refreshFiles(): Promise<void> {
    if (Date.now() - this.lastStat < STAT_INTERVAL_MS) return;
    this.lastStat = Date.now();
    await Promise.all(
      this.files.map(async (f) => {
        const st = await stat(f.path).catch(() => null);
        if (!st) return; // gone: keep the last good version
        const version = `${st.mtimeMs}:${st.size}`;
        if (version === f.version) return;
        f.version = version;
        const c = this.compile(await readFile(f.path, 'utf8'), f.name);
        if (c) {
          f.compiled = c;
          logEvent(this.log, 'info', 'plugin.sieve.reloaded', { rule: f.name }, `${f.name} reloaded`);
        }
      }),
    );
  }

  private async loadStoreRules(): Promise<PinnedRules> {
    if (!this.storeRulesOn) return { scripts: [] };
    if (this.storeRules) return this.storeRules;
    const generation = this.generation;
    let all: Record<string, string>, rawMeta: Record<string, string>, version: string | null;
    try {
      [all, rawMeta, version] = await Promise.all([this.store.hgetall(RULES_KEY), this.store.hgetall(RULES_META_KEY), this.store.get(RULES_VERSION_KEY)]);
    } catch (e) {
      if (!this.lastGood) throw e;
      logEvent(this.log, 'warn', 'plugin.sieve.store_unavailable', { err: e, version: this.lastGood.version }, 'store rules unreadable; running the last rule set read');
      return this.lastGood;
    }
    const meta: Record<string, Partial<RuleMeta>> = {};
    for (const [name, json] of Object.entries(rawMeta)) meta[name] = parseMeta(json);
    const scripts: Script[] = [];
    for (const r of orderRules(all, meta, (name, text) => {
      const c = this.compile(text, name);
      return c !== null && asksOnlyEnvelope(c);
    })) {
      if (!r.active) continue;
      const c = this.compile(r.script, r.name);
      if (c) scripts.push({ name: r.name, compiled: c, stage: r.stage, ...(version !== null ? { version } : {}) });
    }
    const loaded: PinnedRules = { scripts, ...(version !== null ? { version } : {}) };
    this.lastGood = loaded;
    if (generation === this.generation) this.storeRules = loaded;
    return loaded;
  }

  /** The scripts a transaction starting now runs (copies: a later reload does not change them). */
  async current(): Promise<PinnedRules> {
    await this.refreshFiles();
    const store = await this.loadStoreRules();
    return { scripts: [...this.files.map((f) => ({ name: f.name, compiled: f.compiled, version: f.version })), ...store.scripts], ...(store.version !== undefined ? { version: store.version } : {}) };
  }

  /** RFC 6609 include at the gateway: a store rule, else NAME.sieve next to the first file. */
  async include(name: string): Promise<string | undefined> {
    const rule = await this.store.hget(RULES_KEY, name);
    if (rule !== null) return rule;
    if (this.paths.length === 0 || !/^[\w.-]+$/.test(name)) return undefined;
    return readFile(join(dirname(this.paths[0]!), `${name}.sieve`), 'utf8').catch(() => undefined);
  }
}

/**
 * Every file of `scripts` must exist and compile with the gateway's limits, as init needs it;
 * each fault at the file's key path (`scripts.I`), the file named as written in the config.
 */
export async function checkScripts(scripts: string[], global: Config): Promise<OptionProblem[]> {
  const problems: OptionProblem[] = [];
  for (const [i, written] of scripts.entries()) {
    const path = ['scripts', i];
    let text: string;
    try {
      text = await readFile(resolve(global.baseDir, written), 'utf8');
    } catch (e) {
      problems.push({ path, message: unreadable(written, e as NodeJS.ErrnoException) });
      continue;
    }
    const r = compile(text, compileOptions(global.sieve));
    if (!r.ok) problems.push(...r.errors.map((e) => ({ path, message: `${written}:${e.line}:${e.column}: ${e.message}` })));
  }
  return problems;
}

function unreadable(file: string, err: NodeJS.ErrnoException): string {
  if (err.code === 'ENOENT') return `no such file: ${file}`;
  const why = err.code === 'EACCES' ? 'permission denied' : err.code === 'EISDIR' ? 'is a directory' : err.message;
  return `cannot read ${file}: ${why}`;
}

interface State {
  rules: RuleSet;
  global: Config;
}

type Ctx = HookContext<SieveGatewayConfig, State>;

/** What the scripts decided for one recipient. */
interface RcptOutcome {
  reject?: { reason: string; rule: string; line?: number };
  folders: string[];
  redirect: string[];
  /** The message after header edits, when some script edited them. */
  edited?: Buffer;
}

export default definePlugin({
  name: 'sieve',
  config: configSchema,
  checkFiles: ({ config, global }) => checkScripts(config.scripts, global),
  async init({ config, store, log, global }): Promise<State> {
    const rules = new RuleSet(
      config.scripts.map((p) => resolve(global.baseDir, p)),
      config.store_rules,
      store,
      global,
      log,
    );
    await rules.init();
    return { rules, global };
  },
  close(state) {
    state.rules.close();
  },
  hooks: {
    mail: (ctx) => pin(ctx),
    rcpt: (ctx) => early(ctx),
    data: (ctx) => gateway(ctx),
  },
});

/** MAIL: takes the rule set this transaction will run (see the header) and traces its version. */
async function pin(ctx: Ctx): Promise<Verdict> {
  const pinned = await ctx.state.rules.current();
  ctx.notes.pinned = pinned;
  if (pinned.version !== undefined) ctx.trace?.({ verdict: 'next', version: pinned.version, detail: `admin rules version ${pinned.version}` });
  return next();
}

/** The transaction's pinned rule set; the current one when MAIL did not run the plugin. */
async function pinned(ctx: Ctx): Promise<Script[]> {
  const p = (ctx.notes.pinned as PinnedRules | undefined) ?? (await ctx.state.rules.current());
  return p.scripts;
}

async function gateway(ctx: Ctx): Promise<Verdict> {
  const scripts = await pinned(ctx);
  if (scripts.length === 0 || !ctx.message || !ctx.tx) return next();
  const raw = await ctx.message.raw();
  const recipients = ctx.tx.recipients.length > 0 ? ctx.tx.recipients.map((r) => r.address) : ctx.tx.envelope.recipients.map((r) => r.address);
  const outcomes = new Map<string, RcptOutcome>();
  for (const rcpt of recipients) {
    const key = rcpt.toLowerCase();
    if (!outcomes.has(key)) outcomes.set(key, await runFor(ctx, scripts, raw, rcpt));
  }
  const all = [...outcomes.values()];
  const refused = all.filter((o) => o.reject);
  const lmtp = ctx.session.listener === 'lmtp';
  if (refused.length > 0 && (!lmtp || refused.length === all.length)) {
    // RFC 5429 §2.2 ereject / §2.1 reject at SMTP time: refuse the message with the reason (SMTP
    // has one reply for DATA; on LMTP every recipient refused hears it once each).
    return reject(550, '5.7.1', oneLine(refused[0]!.reject!.reason));
  }
  // LMTP (RFC 2033 §4.2): the recipients whose rules refused hear 550, the others go on.
  const refuse: Record<string, { code: number; enhanced: '5.7.1'; text: string }> = {};
  for (const [rcpt, o] of outcomes) if (o.reject) refuse[rcpt] = { code: 550, enhanced: '5.7.1', text: oneLine(o.reject.reason) };
  const live = [...outcomes].filter(([, o]) => !o.reject);
  // Header edits: when every recipient's rules made the same ones, the queued message carries
  // them; otherwise each recipient's copy gets its own (and a redirect the redirecting one's).
  const edits = new Map(live.map(([rcpt, o]) => [rcpt, o.edited ? headerEdits(raw, o.edited) : []]));
  const distinct = new Set([...edits.values()].map((e) => JSON.stringify(e)));
  let copies: Record<string, HeaderEdit[]> | undefined;
  if (distinct.size === 1) applyEdits(ctx.message.headers, [...edits.values()][0]!);
  else {
    copies = {};
    for (const [rcpt, o] of live) {
      const e = edits.get(rcpt)!;
      if (e.length === 0) continue;
      copies[rcpt] = e;
      for (const a of o.redirect) copies[a.toLowerCase()] ??= e;
    }
  }
  const plan: Record<string, string[]> = {};
  const redirect = new Set<string>();
  for (const [rcpt, o] of live) {
    o.redirect.forEach((a) => redirect.add(a));
    if (o.folders.length === 1 && o.folders[0] === 'INBOX') continue;
    plan[rcpt] = o.folders;
  }
  const refusing = Object.keys(refuse).length > 0;
  if (Object.keys(plan).length === 0 && redirect.size === 0 && !copies && !refusing) return next();
  if (redirect.size === 0 && !refusing && live.every(([, o]) => o.folders.length === 0)) return discard('sieve: discarded');
  const reason = `sieve: ${[
    ...Object.entries(refuse).map(([r]) => `${r} refused`),
    ...Object.entries(plan).map(([r, f]) => `${r} → ${f.length ? f.join(',') : 'dropped'}`),
    ...[...redirect].map((a) => `redirect ${a}`),
    ...(copies ? [`own header edits for ${Object.keys(copies).join(', ')}`] : []),
  ].join('; ')}`;
  return reroute({ plan, ...(redirect.size ? { redirect: [...redirect] } : {}), ...(refusing ? { refuse } : {}), ...(copies ? { copies } : {}), reason });
}

/**
 * RCPT stage: the admin scripts that ask only envelope questions (sieve/analyze.ts), as many as
 * lead the list and are not store rules of stage data, run for this recipient before the message
 * exists; a reject there refuses the recipient (550 5.7.1 at RCPT). They follow each other as at
 * DATA (runFor): a script that cancels the implicit keep (keep; stop; to let a sender through,
 * fileinto, discard, redirect) ends the run, so no later one refuses; one that does not act (or
 * only stops itself) lets the next run. The first script that reads the message ends this
 * prefix: what it decides is unknown here, so nothing after it may be decided early. Nothing but
 * a reject is acted on here: the data stage runs every script again with the message, in order,
 * and does the rest (the prefix, asking only the envelope, decides there as it did here).
 */
async function early(ctx: Ctx): Promise<Verdict> {
  if (!ctx.tx || !ctx.rcpt) return next();
  const scripts = await pinned(ctx);
  const lead: Script[] = [];
  for (const s of scripts) {
    if (s.stage === 'data' || !asksOnlyEnvelope(s.compiled)) break;
    lead.push(s);
  }
  if (lead.length === 0) return next();
  const o = await runFor(ctx, lead, NO_MESSAGE, ctx.rcpt.address, { quiet: true });
  if (!o.reject) return next();
  ctx.trace?.({ verdict: 'reject', rule: o.reject.rule, rcpt: ctx.rcpt.address, detail: `reject at RCPT (envelope-only rule): ${oneLine(o.reject.reason)}` });
  return reject(550, '5.7.1', oneLine(o.reject.reason));
}

const NO_MESSAGE = Buffer.alloc(0);

/** Runs the scripts for one recipient (see the header for how scripts follow each other). */
async function runFor(ctx: Ctx, scripts: Script[], raw0: Buffer, rcpt: string, opts: { quiet?: boolean } = {}): Promise<RcptOutcome> {
  const tx = ctx.tx!;
  const out: RcptOutcome = { folders: [], redirect: [] };
  let raw = raw0;
  let implicitKeep = true;
  const envelope = { from: tx.mailFrom, to: rcpt, ...(ctx.session.authUser ? { auth: ctx.session.authUser } : {}) };
  const origin = originClient(ctx.session);
  for (const s of scripts) {
    const r = await run(s.compiled, raw, envelope, host(ctx, s.name), {
      config: ctx.state.global.sieve,
      userAddresses: [rcpt],
      environment: {
        location: 'MTA',
        phase: 'during',
        host: ctx.state.global.hostname,
        domain: ctx.state.global.hostname,
        // RFC 5183 §4.1: the client the message came from (XFORWARD's, for mail a content filter
        // hands back; origin.ts); an unknown one is left out, so a test of it fails.
        ...(origin.address ? { 'remote-ip': origin.address } : {}),
        ...(origin.hostname ? { 'remote-host': origin.hostname } : {}),
        ...authEnvironment(ctx),
      },
    });
    if (!opts.quiet) traceRun(ctx, s.name, rcpt, r, s.version);
    // RFC 5703 replace/enclose rewrite the body, which the gateway does not do (only header edits).
    if (r.message && !opts.quiet) ctx.trace?.({ verdict: 'next', rule: s.name, rcpt, detail: 'replace/enclose not performed at the gateway' });
    if (r.stored) {
      raw = renderHeaders(raw, r.headers, true);
      out.edited = raw;
    }
    for (const a of r.actions) {
      if (a.type === 'reject' || a.type === 'ereject') out.reject = { reason: a.reason, rule: s.name };
      else if (a.type === 'keep') out.folders.push('INBOX');
      else if (a.type === 'fileinto') out.folders.push(/^inbox$/i.test(a.mailbox) ? 'INBOX' : a.mailbox);
      else if (a.type === 'redirect') out.redirect.push(a.address);
    }
    if (out.reject || !r.implicitKeep) {
      implicitKeep = r.implicitKeep && !out.reject;
      break;
    }
  }
  if (implicitKeep && !out.reject) out.folders.push('INBOX');
  out.folders = [...new Set(out.folders)];
  return out;
}

/** RFC 5183 §4.3 vendor items with the auth-results plugin's findings, when it ran before us. */
function authEnvironment(ctx: Ctx): Record<string, string> {
  const a = scanResults(ctx.message)?.auth;
  return a ? { 'vnd.postern.spf': a.spf, 'vnd.postern.dkim': a.dkim, 'vnd.postern.dmarc': a.dmarc, 'vnd.postern.arc': a.arc } : {};
}

function host(ctx: Ctx, rule: string): SieveHost {
  const store = ctx.store;
  return {
    mailboxExists: () => true,
    duplicate: async ({ handle, id, seconds, last }) => {
      const key = `sieve:duplicate:gw:${createHash('sha256').update(`${rule}\0${handle}\0${id}`).digest('hex').slice(0, 32)}`;
      const fresh = await store.set(key, '1', { ttlMs: seconds * 1000, ifAbsent: true });
      if (!fresh && last) await store.set(key, '1', { ttlMs: seconds * 1000 });
      return !fresh;
    },
    include: (name) => ctx.state.rules.include(name),
    // RFC 5235: what the scanner plugins earlier in the chain found (none ran: the headers are read).
    spamScore: () => {
      const spam = scanResults(ctx.message)?.spam;
      return spam ? { score: spam.score, max: spam.max } : undefined;
    },
    virusLevel: () => scanResults(ctx.message)?.virus?.level,
  };
}

const KIND: Record<SieveAction['type'], VerdictKind> = {
  keep: 'next',
  fileinto: 'reroute',
  redirect: 'reroute',
  reject: 'reject',
  ereject: 'reject',
  discard: 'discard',
  vacation: 'next',
};

function traceRun(ctx: Ctx, rule: string, rcpt: string, r: SieveResult, version?: string): void {
  const v = version !== undefined ? { version } : {};
  if (r.status === 'runtime-error') {
    for (const e of r.errors) ctx.trace?.({ verdict: 'error', rule, line: e.line, rcpt, detail: `runtime error: ${e.message}; implicit keep`, ...v });
    logEvent(ctx.log, 'warn', 'plugin.sieve.rule', { rule, rcpt, status: r.status, errors: r.errors }, 'rule failed at run time; implicit keep');
    return;
  }
  r.actions.forEach((a, i) => {
    const line = r.lines?.[i];
    const detail = a.type === 'vacation' ? `${describeAction(a)} (not performed at the gateway)` : describeAction(a);
    // The tests that matched between the previous action and this one.
    const matched = (r.matches ?? []).filter((m) => m.action === i).map(({ line: l, test, header, value }) => ({ line: l, test, ...(header !== undefined ? { header } : {}), ...(value !== undefined ? { value } : {}) }));
    ctx.trace?.({ verdict: KIND[a.type], rule, rcpt, detail, ...(line !== undefined ? { line } : {}), ...v, ...(matched.length ? { matched } : {}) });
    logEvent(ctx.log, 'debug', 'plugin.sieve.rule', { rule, rcpt, line, action: a.type, ...v }, detail);
  });
  if (r.stored) ctx.trace?.({ verdict: 'next', rule, rcpt, detail: 'header fields edited', ...v });
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim().slice(0, 400) || 'Message refused';

/**
 * Replays Sieve's header edits (RFC 5293: fields added at the top or the bottom, fields
 * deleted) on the queued message's HeaderEditor: the edited header list is matched against the
 * original one in order; unmatched originals were deleted, new fields before the first kept one
 * were added at the top, the others at the bottom.
 */
export function applyHeaderEdits(editor: HeaderEditor, before: Buffer, after: Buffer): void {
  applyEdits(editor, headerEdits(before, after));
}

/** The edits (in the order to perform them) that turn `before`'s header into `after`'s; see applyHeaderEdits. */
export function headerEdits(before: Buffer, after: Buffer): HeaderEdit[] {
  const orig = splitMessage(before).headers;
  const now = splitMessage(after).headers;
  const same = (a: HeaderField, b: HeaderField) => a.name.toLowerCase() === b.name.toLowerCase() && unfold(a.raw) === unfold(b.raw);
  const kept = new Array<boolean>(orig.length).fill(false);
  const top: HeaderField[] = [];
  const bottom: HeaderField[] = [];
  let i = 0;
  let seenKept = false;
  for (const f of now) {
    let k = i;
    while (k < orig.length && !same(orig[k]!, f)) k++;
    if (k < orig.length) {
      kept[k] = true;
      i = k + 1;
      seenKept = true;
    } else (seenKept ? bottom : top).push(f);
  }
  // Deletions, last first, by their index among fields of the same name.
  const removals: { name: string; index: number }[] = [];
  const count = new Map<string, number>();
  orig.forEach((f, idx) => {
    const n = f.name.toLowerCase();
    const nth = count.get(n) ?? 0;
    count.set(n, nth + 1);
    if (!kept[idx]) removals.push({ name: f.name, index: nth });
  });
  return [
    ...removals.reverse().map((r): HeaderEdit => ({ op: 'remove', name: r.name, index: r.index })),
    ...[...top].reverse().map((f): HeaderEdit => ({ op: 'add', name: f.name, value: unfold(f.raw), where: 'top' })),
    ...bottom.map((f): HeaderEdit => ({ op: 'add', name: f.name, value: unfold(f.raw), where: 'bottom' })),
  ];
}
