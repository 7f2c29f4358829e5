// The admin Sieve rules the gateway runs (plugins/sieve), versioned. Keys:
//   sieve:rules            hash name → script text: the live rule set, what plugins/sieve reads
//   sieve:rules:version    the id of the live version (plugins/sieve puts it in the trace)
//   sieve:rules:versions   hash id → JSON RuleSetVersion: every version, a full snapshot each
//   sieve:rules:seq        counter giving version ids (1, 2, …), shared by every node
//   sieve:rules:lock       SET NX with a TTL: one writer at a time across nodes
// Every change (put, delete, rollback) writes the live hash, then a new snapshot, then the version
// pointer, and publishes { version } on the `rules` channel; readers reload on that event. The
// first change made when no version exists yet first records the rules already there, possibly
// none, as version 1 ("import"), so a rollback can always go back to before the first change.
// The newest MAX_VERSIONS snapshots are kept.
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.js';
import { compile } from '../sieve/compile.js';
import type { SieveError } from '../sieve/ast.js';
import { ApiProblem } from './errors.js';

export const RULES_KEY = 'sieve:rules';
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

export type RuleChange = { op: 'import' } | { op: 'put'; name: string } | { op: 'delete'; name: string } | { op: 'rollback'; to: number };

export interface RuleSetVersion {
  id: number;
  created_at: string;
  token: string;
  change: RuleChange;
  rules: Record<string, string>;
}

export interface Rule {
  name: string;
  script: string;
}

const field = (id: number) => String(id).padStart(12, '0');

export class RuleRepository {
  constructor(
    private readonly store: Store,
    private readonly maxRedirects: number,
  ) {}

  /** The compile errors of `script`, or [] when it compiles (with the gateway's limits). */
  check(script: string): SieveError[] {
    const r = compile(script, { limits: { maxRedirects: this.maxRedirects } });
    return r.ok ? [] : r.errors;
  }

  async version(): Promise<number> {
    return Number((await this.store.get(VERSION_KEY)) ?? 0);
  }

  async list(): Promise<{ version: number; rules: Rule[] }> {
    const [all, version] = await Promise.all([this.store.hgetall(RULES_KEY), this.version()]);
    return { version, rules: Object.keys(all).sort().map((name) => ({ name, script: all[name]! })) };
  }

  async get(name: string): Promise<Rule | null> {
    const script = await this.store.hget(RULES_KEY, name);
    return script === null ? null : { name, script };
  }

  /**
   * Applies `change` to the live rule set under the lock. `decide` sees the current rules and
   * returns the new set (or throws: 404, 412, …); nothing is written when it throws.
   */
  async change(token: string, change: RuleChange, decide: (current: Record<string, string>) => Record<string, string>): Promise<RuleSetVersion> {
    return this.locked(async () => {
      const [current, live] = await Promise.all([this.store.hgetall(RULES_KEY), this.store.get(VERSION_KEY)]);
      const next = decide(current);
      if (live === null) await this.snapshot(token, { op: 'import' }, current);
      // The writes below are independent: issued together, a driver can commit them as one batch.
      const gone = Object.keys(current).filter((n) => !(n in next));
      const writes: Promise<unknown>[] = [];
      if (gone.length) writes.push(this.store.hdel(RULES_KEY, ...gone));
      for (const [name, script] of Object.entries(next)) if (current[name] !== script) writes.push(this.store.hset(RULES_KEY, name, script));
      const [v] = await Promise.all([this.snapshot(token, change, next), ...writes]);
      await this.store.publish(RULES_CHANNEL, JSON.stringify({ version: v.id }));
      return v;
    });
  }

  private async snapshot(token: string, change: RuleChange, rules: Record<string, string>): Promise<RuleSetVersion> {
    const id = await this.store.incr(SEQ_KEY);
    const v: RuleSetVersion = { id, created_at: new Date().toISOString(), token, change, rules };
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

  /** Makes a new version whose rules are those of version `id`. */
  async rollback(token: string, id: number): Promise<RuleSetVersion> {
    const target = await this.getVersion(id);
    if (!target) throw new ApiProblem('not-found', `rule set version ${id} does not exist (or is older than the ${MAX_VERSIONS} kept)`);
    if ((await this.version()) === id) throw new ApiProblem('conflict', `version ${id} is already the live rule set`);
    return this.change(token, { op: 'rollback', to: id }, () => ({ ...target.rules }));
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
