// The admin Sieve rules the gateway runs (plugins/sieve), versioned. Keys:
//   sieve:rules            hash name → script text: the live rule set, what plugins/sieve reads
//   sieve:rules:meta       hash name → JSON { stage, position, active } (sieve/rule-order.ts)
//   sieve:rules:version    the id of the live version (plugins/sieve puts it in the trace)
//   sieve:rules:versions   hash id → JSON RuleSetVersion: every version, a full snapshot each
//                          (scripts and metadata, so a rollback restores order and activation)
//   sieve:rules:seq        counter giving version ids (1, 2, …), shared by every node
//   sieve:rules:lock       SET NX with a TTL: one writer at a time across nodes
// Every change (put, settings, order, delete, rollback) writes the live hashes, then a new
// snapshot, then the version pointer, and publishes { version } on the `rules` channel; readers
// reload on that event. The first change made when no version exists yet first records the rules
// already there, possibly none, as version 1 ("import"), so a rollback can always go back to
// before the first change. The newest MAX_VERSIONS snapshots are kept.
//
// A rule's stage follows from the order (sieve/rule-order.ts): rcpt for the envelope-only rules
// that lead it (sieve/analyze.ts), provided the sieve plugin's own files, which run before the
// store rules, are envelope-only too (`leadEarly`, see gateway-files.ts); data from the first
// rule that reads the message on. A change that asks for a stage the rule would not be at is
// refused (422) with the reason.
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.js';
import { compile, type CompileOptions } from '../sieve/compile.js';
import { asksOnlyEnvelope } from '../sieve/analyze.js';
import type { SieveError } from '../sieve/ast.js';
import { orderRules, parseMeta, serializeMeta, type OrderedRule, type RuleMeta, type RuleStage } from '../sieve/rule-order.js';
import { ApiProblem } from './errors.js';

export const RULES_KEY = 'sieve:rules';
export const META_KEY = 'sieve:rules:meta';
export const RULES_CHANNEL = 'rules';
export const VERSION_KEY = 'sieve:rules:version';
export const VERSIONS_KEY = 'sieve:rules:versions';
const SEQ_KEY = 'sieve:rules:seq';
const LOCK_KEY = 'sieve:rules:lock';
const LOCK_TTL_MS = 5000;
const LOCK_WAIT_MS = 2000;
export const MAX_VERSIONS = 500;

/** Rule names: what a file name and a URL segment can carry without escaping. */
export const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Path segments under /v1/rules that are not rules. */
export const RESERVED_RULE_NAMES = new Set(['versions']);

export type RuleChange =
  | { op: 'import' }
  | { op: 'put'; name: string }
  | { op: 'settings'; name: string }
  | { op: 'delete'; name: string }
  | { op: 'order'; stage: RuleStage }
  | { op: 'rollback'; to: number };

export interface RuleSetVersion {
  id: number;
  created_at: string;
  token: string;
  change: RuleChange;
  rules: Record<string, string>;
  /** Stage, position and activation of each rule; absent in versions made before they existed. */
  meta?: Record<string, RuleMeta>;
}

/** A rule with its place: what the API shows, in run order (sieve/rule-order.ts). */
export type Rule = OrderedRule;

/** What a change decides: the new scripts and the metadata of the rules that keep or get some. */
export interface RuleSetDraft {
  scripts: Record<string, string>;
  meta: Record<string, Partial<RuleMeta> | undefined>;
  /** The stage the change asked for one rule: refused (422) when the new order puts it elsewhere. */
  expect?: { name: string; stage: RuleStage };
}

const field = (id: number) => String(id).padStart(12, '0');

export class RuleRepository {
  /**
   * `leadEarly` tells whether the scripts that run before the store rules (the sieve plugin's
   * files) can all be decided at RCPT; without it there are none.
   */
  constructor(
    private readonly store: Store,
    /** How rules compile: `sieve.limits` and `sieve.extensions` (sieve/config.ts compileOptions). */
    private readonly compileWith: CompileOptions,
    private readonly leadEarly: () => Promise<boolean> = () => Promise.resolve(true),
  ) {
    this.unsubscribe = store.subscribe(RULES_CHANNEL, () => this.forget());
  }

  /** The compile errors of `script`, or [] when it compiles (with the gateway's limits). */
  check(script: string): SieveError[] {
    const r = compile(script, this.compileWith);
    return r.ok ? [] : r.errors;
  }

  private readonly envelopeOnlyByText = new Map<string, boolean>();

  /** True when `script` compiles and asks only envelope questions (may run at stage rcpt). */
  envelopeOnly(script: string): boolean {
    let known = this.envelopeOnlyByText.get(script);
    if (known === undefined) {
      const r = compile(script, this.compileWith);
      known = r.ok && asksOnlyEnvelope(r.script);
      if (this.envelopeOnlyByText.size > 1000) this.envelopeOnlyByText.clear();
      this.envelopeOnlyByText.set(script, known);
    }
    return known;
  }

  /** Orders scripts and metadata as plugins/sieve runs them, after files that are `leadEarly` or not. */
  order(scripts: Record<string, string>, meta: Record<string, Partial<RuleMeta> | undefined>, leadEarly: boolean): Rule[] {
    return orderRules(scripts, meta, (_name, script) => this.envelopeOnly(script), leadEarly);
  }

  /** The rules of a kept version, in the order they ran, with the stages they would have now. */
  async rulesOf(v: RuleSetVersion): Promise<Rule[]> {
    return this.order(v.rules, v.meta ?? {}, await this.leadEarly());
  }

  async version(): Promise<number> {
    return Number((await this.store.get(VERSION_KEY)) ?? 0);
  }

  /**
   * The live rules as last read, kept until an event on the `rules` channel (every change, on any
   * node, publishes one; the store sends one after a reconnection too), as plugins/sieve keeps
   * its compiled rules: reads between changes cost no store round-trip. Writers set the version
   * pointer only after the rules are written, so rules read after it are at least that version's.
   * Version 0 (rules put into the store by hand, never through a change) is not kept, nor rules
   * ordered after files that have changed since (their stages may have).
   */
  private cached: { version: number; leadEarly: boolean; rules: Rule[] } | null = null;
  /** Bumped by each event: a read that began before one must not be kept after it. */
  private generation = 0;
  private readonly unsubscribe: () => void;

  /** Stops listening for change events (the API's close). */
  close(): void {
    this.unsubscribe();
  }

  private forget(): void {
    this.generation++;
    this.cached = null;
  }

  /** The live rules in run order, and the live version. The array is shared: do not modify it. */
  async list(): Promise<{ version: number; rules: Rule[] }> {
    const leadEarly = await this.leadEarly();
    if (this.cached?.leadEarly === leadEarly) return this.cached;
    const generation = this.generation;
    const version = await this.version();
    const [scripts, meta] = await Promise.all([this.store.hgetall(RULES_KEY), this.store.hgetall(META_KEY)]);
    const live = { version, leadEarly, rules: this.order(scripts, parsedMeta(meta), leadEarly) };
    if (version !== 0 && generation === this.generation) this.cached = live;
    return live;
  }

  async get(name: string): Promise<{ version: number; rule: Rule | null }> {
    const { version, rules } = await this.list();
    return { version, rule: rules.find((r) => r.name === name) ?? null };
  }

  /**
   * Applies `change` to the live rule set under the lock. `decide` sees the current rules and
   * returns the new set (or throws: 404, 412, …); nothing is written when it throws.
   */
  async change(token: string, change: RuleChange, decide: (current: Rule[]) => RuleSetDraft): Promise<{ version: RuleSetVersion; rules: Rule[] }> {
    return this.locked(async () => {
      const [scripts, rawMeta, live, leadEarly] = await Promise.all([this.store.hgetall(RULES_KEY), this.store.hgetall(META_KEY), this.store.get(VERSION_KEY), this.leadEarly()]);
      const current = this.order(scripts, parsedMeta(rawMeta), leadEarly);
      const draft = decide(current);
      const next = this.order(draft.scripts, draft.meta, leadEarly);
      const placed = draft.expect && next.find((r) => r.name === draft.expect!.name);
      if (placed && placed.stage !== draft.expect!.stage) throw new ApiProblem('unprocessable', this.notAtStage(placed, leadEarly));
      if (live === null) await this.snapshot(token, { op: 'import' }, current);
      // The rule writes are independent: issued together, a driver can commit them as one batch.
      // The new version pointer goes after them (see `cached`).
      const gone = Object.keys(scripts).filter((n) => !(n in draft.scripts));
      const goneMeta = Object.keys(rawMeta).filter((n) => !(n in draft.scripts));
      const writes: Promise<unknown>[] = [];
      if (gone.length) writes.push(this.store.hdel(RULES_KEY, ...gone));
      if (goneMeta.length) writes.push(this.store.hdel(META_KEY, ...goneMeta));
      for (const r of next) {
        if (scripts[r.name] !== r.script) writes.push(this.store.hset(RULES_KEY, r.name, r.script));
        const m = serializeMeta(r);
        if (rawMeta[r.name] !== m) writes.push(this.store.hset(META_KEY, r.name, m));
      }
      await Promise.all(writes);
      const v = await this.snapshot(token, change, next);
      await this.store.publish(RULES_CHANNEL, JSON.stringify({ version: v.id }));
      // This node's next read sees the change even before its own event comes back.
      this.forget();
      return { version: v, rules: next };
    });
  }

  /** Why `rule` came out at the other stage than the one asked for. */
  private notAtStage(rule: Rule, leadEarly: boolean): string {
    if (rule.stage === 'rcpt') {
      return `rule ${rule.name} would be at stage rcpt: it asks only envelope questions and so does every rule before it, so it is decided at RCPT; to run it at DATA, put it after a rule of stage data`;
    }
    if (!this.envelopeOnly(rule.script)) {
      return `rule ${rule.name} would be at stage rcpt, which runs before the message exists, but its script reads the message or asks for outside facts; put it at stage data`;
    }
    if (!leadEarly) {
      return `rule ${rule.name} cannot be at stage rcpt: the sieve plugin's files (scripts) run before the store rules and one of them reads the message, so every store rule runs at DATA`;
    }
    return `rule ${rule.name} cannot be at stage rcpt there: a rule before it reads the message`;
  }

  private async snapshot(token: string, change: RuleChange, ordered: Rule[]): Promise<RuleSetVersion> {
    const id = await this.store.incr(SEQ_KEY);
    const rules: Record<string, string> = {};
    const meta: Record<string, RuleMeta> = {};
    for (const r of ordered) {
      rules[r.name] = r.script;
      meta[r.name] = { stage: r.stage, position: r.position, active: r.active };
    }
    const v: RuleSetVersion = { id, created_at: new Date().toISOString(), token, change, rules, meta };
    await Promise.all([
      this.store.hset(VERSIONS_KEY, field(id), JSON.stringify(v)),
      this.store.set(VERSION_KEY, String(id)),
      ...(id > MAX_VERSIONS ? [this.store.hdel(VERSIONS_KEY, field(id - MAX_VERSIONS))] : []),
    ]);
    return v;
  }

  /** Every kept version, newest first. */
  async versions(): Promise<RuleSetVersion[]> {
    const all = await this.store.hgetall(VERSIONS_KEY);
    return Object.keys(all)
      .sort()
      .reverse()
      .map((k) => JSON.parse(all[k]!) as RuleSetVersion);
  }

  async getVersion(id: number): Promise<RuleSetVersion | null> {
    const raw = await this.store.hget(VERSIONS_KEY, field(id));
    return raw === null ? null : (JSON.parse(raw) as RuleSetVersion);
  }

  /** Makes a new version whose rules, order and activation are those of version `id`. */
  async rollback(token: string, id: number): Promise<{ version: RuleSetVersion; rules: Rule[] }> {
    const target = await this.getVersion(id);
    if (!target) throw new ApiProblem('not-found', `rule set version ${id} does not exist (or is older than the ${MAX_VERSIONS} kept)`);
    if ((await this.version()) === id) throw new ApiProblem('conflict', `version ${id} is already the live rule set`);
    return this.change(token, { op: 'rollback', to: id }, () => ({ scripts: { ...target.rules }, meta: { ...(target.meta ?? {}) } }));
  }

  /** Writers on this node queue here first, so only one of them at a time polls the store lock. */
  private local: Promise<unknown> = Promise.resolve();

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const mine = this.local.then(() => this.storeLocked(fn));
    this.local = mine.catch(() => undefined);
    return mine;
  }

  private async storeLocked<T>(fn: () => Promise<T>): Promise<T> {
    const me = randomBytes(8).toString('hex');
    const until = Date.now() + LOCK_WAIT_MS;
    while (!(await this.store.set(LOCK_KEY, me, { ttlMs: LOCK_TTL_MS, ifAbsent: true }))) {
      if (Date.now() > until) throw new ApiProblem('conflict', 'another change to the rules is in progress; try again');
      await new Promise((r) => setTimeout(r, 20));
    }
    try {
      return await fn();
    } finally {
      // Only our own lock is released (a lock that expired may belong to someone else now).
      if ((await this.store.get(LOCK_KEY)) === me) await this.store.del(LOCK_KEY);
    }
  }
}

function parsedMeta(raw: Record<string, string>): Record<string, Partial<RuleMeta>> {
  const out: Record<string, Partial<RuleMeta>> = {};
  for (const [name, json] of Object.entries(raw)) out[name] = parseMeta(json);
  return out;
}
