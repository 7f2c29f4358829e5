// The user directory (directory.ts's Directory) kept in the Store, so every process sharing the
// store (the daemon, `postern user …`, other nodes with Redis) sees one directory.
//
// Keys (values are JSON):
//   dir:user:<address>      { address, passwordHash?, createdAt }
//   dir:alias:<address>     { targets: string[] }         one address → many, local or remote
//   dir:catchall:<domain>   { target: string }            every unknown local part of the domain
// Every change publishes { op, address | domain } on the "directory" channel.
//
// Address rules:
//   - Addresses are parsed with address.ts (RFC 5321 §4.1.2); malformed ones are refused with a
//     DirectoryError naming the reason. Domains compare case-insensitively (RFC 5321 §2.4).
//   - Local parts are treated as case-insensitive too: lookups and stored keys use the lower-cased
//     form. RFC 5321 §2.4 lets the receiving host decide, and discourages relying on case; mail to
//     Alice@ and alice@ reaching different people is a support problem, not a feature. Remote
//     alias targets keep their local part as written, since the remote host decides for them.
//   - Subaddressing (RFC 5233): "user+detail@domain" reaches "user@domain" when no exact entry
//     exists; the detail is split at the first "+" and returned as `detail`.
//   - Resolution order for a local domain: alias (exact), user (exact), then with the +detail
//     removed: alias, user; then the domain's catch-all. Aliases come first (as in Postfix's
//     virtual_alias_maps), so "alice → alice, archive@elsewhere" keeps a copy and forwards one:
//     when expansion meets an address it already passed through, it delivers to that user.
//   - postmaster (RFC 5321 §4.5.1: every domain MUST accept mail for it): postmaster@ a local
//     domain with no user, alias or catch-all of its own goes to postmaster@ the first local
//     domain, and when that has none either, to that address's own mailbox, which needs no user
//     record (as Postfix ships a postmaster alias). `user alias` or `user add` sends it elsewhere.
//   - `expand` follows aliases recursively, at most MAX_DEPTH levels and MAX_TARGETS results;
//     a loop ends where it closes. Targets that are unknown local addresses are dropped (logged).
//
// Caching: entries read from the store are kept in memory and dropped on any "directory" event,
// so changes made by another process apply within that process's event latency (embedded store:
// fs.watch, at most its poll interval). A miss always asks the store, so a user just added is
// found at once; a failed password check re-reads the user once, so a new password works at once.
//
// Config keys read: `domains.local` (passed in as localDomains).
import { AddressError, parseAddress, type AddressTrick } from '../address/address.js';
import type { Logger } from '../log/logger.js';
import { silentLogger } from '../log/logger.js';
import type { Store } from '../store/store.js';
import type { Directory, Resolution, User } from './directory.js';
import { burnDummy, DEFAULT_SCRYPT, hashPassword, verifyPassword, type ScryptParams } from './password.js';

export const DIRECTORY_CHANNEL = 'directory';
/** Alias nesting deeper than this is cut off (Sendmail and Postfix use limits of this order). */
export const MAX_DEPTH = 10;
/** At most this many recipients from one expansion. */
export const MAX_TARGETS = 1000;
const MAX_CACHE = 10_000;

const USER = 'dir:user:';
const ALIAS = 'dir:alias:';
const CATCHALL = 'dir:catchall:';

export type DirectoryErrorCode = 'invalid-address' | 'not-local' | 'exists' | 'no-such-user' | 'empty-password' | 'invalid-target';

export class DirectoryError extends Error {
  constructor(
    readonly code: DirectoryErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DirectoryError';
  }
}

export interface DirectoryOptions {
  store: Store;
  /** `domains.local`; compared case-insensitively, a trailing dot ignored. */
  localDomains: string[];
  log?: Logger;
  /** Cost of new hashes (tests lower it). */
  scrypt?: ScryptParams;
}

/** Tricks that have no place in a directory entry (see address.ts); a trailing dot is harmless. */
const REFUSED_TRICKS: AddressTrick[] = ['percent-hack', 'bang-path', 'quoted-at', 'source-route', 'ip-literal'];

interface Canonical {
  /** Lower-cased local part. */
  local: string;
  domain: string;
  /** local@domain, quoted where needed, lower-cased. */
  address: string;
  tricks: AddressTrick[];
}

function canonical(input: string): Canonical {
  let p;
  try {
    p = parseAddress(input);
  } catch (e) {
    if (e instanceof AddressError) throw new DirectoryError('invalid-address', `invalid address "${input}": ${e.reason}`);
    throw e;
  }
  const at = p.address.lastIndexOf('@');
  return { local: p.local.toLowerCase(), domain: p.domain, address: `${p.address.slice(0, at).toLowerCase()}@${p.domain}`, tricks: p.tricks };
}

/** The form the directory keys an address by; throws DirectoryError('invalid-address'). */
export function canonicalAddress(input: string): string {
  return canonical(input).address;
}

/** local@domain with quoting where RFC 5321 needs it (parseAddress decides). */
function join(local: string, domain: string): string {
  return parseAddress(`"${local.replace(/(["\\])/g, '\\$1')}"@${domain}`).address;
}

const normDomain = (d: string) => d.toLowerCase().replace(/\.+$/, '');

interface UserRecord {
  address: string;
  passwordHash?: string;
  createdAt: number;
}

export interface ExpandResult {
  local: { user: string; address: string; detail?: string }[];
  remote: string[];
}

export class StoreDirectory implements Directory {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly domains: Set<string>;
  /** Where postmaster@ any local domain ends up when nothing else takes it. */
  private readonly firstDomain: string | undefined;
  private readonly params: ScryptParams;
  private readonly cache = new Map<string, unknown>();
  /** Bumped on every invalidation: a load that started before it must not fill the cache. */
  private epoch = 0;
  private readonly unsubscribe: () => void;

  constructor(opts: DirectoryOptions) {
    this.store = opts.store;
    this.log = opts.log ?? silentLogger();
    this.domains = new Set(opts.localDomains.map(normDomain));
    this.firstDomain = opts.localDomains.length ? normDomain(opts.localDomains[0]!) : undefined;
    this.params = opts.scrypt ?? DEFAULT_SCRYPT;
    this.unsubscribe = this.store.subscribe(DIRECTORY_CHANNEL, () => this.invalidate());
  }

  /** Stops listening for changes (the store stays open: its owner closes it). */
  close(): void {
    this.unsubscribe();
    this.invalidate();
  }

  /** Forgets every cached entry (done on each "directory" event). */
  invalidate(): void {
    this.epoch++;
    this.cache.clear();
  }

  isLocalDomain(domain: string): boolean {
    return this.domains.has(normDomain(domain));
  }

  // ------------------------------------------------------------------ lookups

  async resolve(address: string): Promise<Resolution> {
    const a = canonical(address);
    if (!this.isLocalDomain(a.domain)) return { kind: 'foreign' };
    return this.orPostmaster(a, (await this.resolveLocal(a, true)) ?? (await this.catchAllOf(a.domain)));
  }

  async expand(address: string): Promise<ExpandResult | null> {
    const start = canonical(address);
    const out: ExpandResult = { local: [], remote: [] };
    const users = new Set<string>();
    const remotes = new Set<string>();
    const visited = new Set<string>();
    let count = 0;

    const walk = async (target: string, depth: number): Promise<void> => {
      if (count >= MAX_TARGETS) return;
      const a = canonical(target);
      if (!this.isLocalDomain(a.domain)) {
        // Remote: keep the local part's case, the remote host decides about it.
        const remote = parseAddress(target).address;
        if (!remotes.has(remote.toLowerCase())) {
          remotes.add(remote.toLowerCase());
          out.remote.push(remote);
          count++;
        }
        return;
      }
      let r: Resolution | null;
      if (visited.has(a.address)) {
        // The chain came back to an address it passed: that address means its own mailbox now
        // (postmaster's included, which needs no user record).
        r = await this.orPostmaster(a, (await this.resolveLocal(a, false)) ?? { kind: 'unknown' });
      } else {
        visited.add(a.address);
        if (depth > MAX_DEPTH) {
          this.log.warn({ evt: 'directory.alias.dropped', address: start.address, depth }, 'alias expansion too deep; branch dropped');
          return;
        }
        r = await this.orPostmaster(a, (await this.resolveLocal(a, true)) ?? (await this.catchAllOf(a.domain)));
      }
      if (!r || r.kind === 'unknown' || r.kind === 'foreign') {
        if (depth > 0) this.log.warn({ evt: 'directory.alias.dropped', address: start.address, target: a.address }, 'alias target is not a known local address; dropped');
        return;
      }
      if (r.kind === 'local') {
        const key = r.user; // one copy per mailbox, whatever detail reached it first
        if (users.has(key)) return;
        users.add(key);
        out.local.push(r.detail === undefined ? { user: r.user, address: a.address } : { user: r.user, address: a.address, detail: r.detail });
        count++;
        return;
      }
      for (const t of r.targets) await walk(t, depth + 1);
    };

    await walk(address, 0);
    return out.local.length || out.remote.length ? out : null;
  }

  async authenticate(username: string, password: string): Promise<string | null> {
    let a: Canonical | null = null;
    try {
      a = canonical(username);
    } catch {
      a = null;
    }
    let rec = a && this.isLocalDomain(a.domain) ? await this.userRecord(a.address) : null;
    if (!rec?.passwordHash || password.length === 0) return burnDummy(password, this.params).then(() => null);
    if (await verifyPassword(password, rec.passwordHash, this.params)) return rec.address;
    // The cached hash may predate a `user passwd` whose event has not arrived yet: ask the store.
    const fresh = await this.readUser(rec.address);
    if (fresh?.passwordHash && fresh.passwordHash !== rec.passwordHash) {
      this.cacheSet(USER + rec.address, fresh, this.epoch);
      rec = fresh;
      if (await verifyPassword(password, fresh.passwordHash!, this.params)) return rec.address;
    }
    return null;
  }

  async getUser(address: string): Promise<User | null> {
    const a = canonical(address);
    return toUser(await this.userRecord(a.address));
  }

  async listUsers(): Promise<User[]> {
    const keys = await this.store.keys(USER);
    const users: User[] = [];
    for (const k of keys) {
      const u = toUser(parseJson<UserRecord>(await this.store.get(k), k, this.log));
      if (u) users.push(u);
    }
    return users.sort((x, y) => (x.address < y.address ? -1 : x.address > y.address ? 1 : 0));
  }

  /** Every alias with its targets, by address. */
  async listAliases(): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {};
    for (const k of (await this.store.keys(ALIAS)).sort()) {
      const rec = parseJson<{ targets: string[] }>(await this.store.get(k), k, this.log);
      if (rec) out[k.slice(ALIAS.length)] = rec.targets;
    }
    return out;
  }

  async getAlias(address: string): Promise<string[] | null> {
    return (await this.aliasTargets(canonical(address).address)) ?? null;
  }

  // ------------------------------------------------------------------ changes

  async addUser(address: string, password?: string): Promise<User> {
    const a = this.localEntry(address);
    if (password !== undefined && password.length === 0) throw new DirectoryError('empty-password', 'the password is empty');
    const rec: UserRecord = { address: a.address, createdAt: Date.now() };
    if (password !== undefined) rec.passwordHash = await hashPassword(password, this.params);
    // SET NX: two concurrent adds (even from two processes) cannot both succeed.
    if (!(await this.store.set(USER + a.address, JSON.stringify(rec), { ifAbsent: true }))) {
      throw new DirectoryError('exists', `user ${a.address} already exists`);
    }
    await this.changed('user.add', a.address);
    return toUser(rec)!;
  }

  async setPassword(address: string, password: string): Promise<void> {
    const a = canonical(address);
    if (password.length === 0) throw new DirectoryError('empty-password', 'the password is empty');
    const cur = await this.readUser(a.address);
    if (!cur) throw new DirectoryError('no-such-user', `no such user: ${a.address}`);
    const rec: UserRecord = { ...cur, passwordHash: await hashPassword(password, this.params) };
    await this.store.set(USER + a.address, JSON.stringify(rec));
    await this.changed('user.passwd', a.address);
  }

  async deleteUser(address: string): Promise<boolean> {
    const a = canonical(address);
    const gone = (await this.store.del(USER + a.address)) > 0;
    if (gone) await this.changed('user.del', a.address);
    return gone;
  }

  async setAlias(address: string, targets: string[]): Promise<void> {
    const a = this.localEntry(address);
    if (targets.length === 0) throw new DirectoryError('invalid-target', `alias ${a.address} needs at least one target`);
    const clean: string[] = [];
    for (const t of targets) {
      const v = this.target(t);
      if (!clean.some((c) => c.toLowerCase() === v.toLowerCase())) clean.push(v);
    }
    await this.store.set(ALIAS + a.address, JSON.stringify({ targets: clean }));
    await this.changed('alias.set', a.address);
  }

  async deleteAlias(address: string): Promise<boolean> {
    const a = canonical(address);
    const gone = (await this.store.del(ALIAS + a.address)) > 0;
    if (gone) await this.changed('alias.del', a.address);
    return gone;
  }

  async setCatchAll(domain: string, target: string | null): Promise<void> {
    const d = normDomain(domain);
    if (!this.isLocalDomain(d)) throw new DirectoryError('not-local', `domain ${d} is not in domains.local`);
    if (target === null) await this.store.del(CATCHALL + d);
    else await this.store.set(CATCHALL + d, JSON.stringify({ target: this.target(target) }));
    await this.changed('catchall.set', d);
  }

  // ------------------------------------------------------------------ internals

  /**
   * Alias, then user, for the exact address and (with `subaddress`) its +detail-less base.
   * Null when nothing matched (the caller may try the catch-all).
   */
  private async resolveLocal(a: Canonical, withAliases: boolean): Promise<Resolution | null> {
    if (withAliases) {
      const targets = await this.aliasTargets(a.address);
      if (targets) return { kind: 'alias', targets };
    }
    if (await this.userRecord(a.address)) return { kind: 'local', user: a.address };
    // RFC 5233 §1: "user+detail"; a "+" first in the local part is no separator.
    const plus = a.local.indexOf('+');
    if (plus > 0) {
      const base = join(a.local.slice(0, plus), a.domain);
      const detail = a.local.slice(plus + 1);
      if (withAliases) {
        const targets = await this.aliasTargets(base);
        if (targets) return { kind: 'alias', targets };
      }
      if (await this.userRecord(base)) return { kind: 'local', user: base, detail };
    }
    return null;
  }

  /** `r`, unless it is unknown and `a` is a postmaster address: see the header. */
  private async orPostmaster(a: Canonical, r: Resolution): Promise<Resolution> {
    if (r.kind !== 'unknown' || a.local !== 'postmaster' || !this.firstDomain) return r;
    const main = join('postmaster', this.firstDomain);
    if (a.domain === this.firstDomain) return { kind: 'local', user: main };
    // The first domain's postmaster, whatever it resolves to (its own fallback included).
    return { kind: 'alias', targets: [main] };
  }

  private async catchAllOf(domain: string): Promise<Resolution> {
    const target = await this.cached(CATCHALL + domain, async () => parseJson<{ target: string }>(await this.store.get(CATCHALL + domain), CATCHALL + domain, this.log)?.target ?? null);
    return target ? { kind: 'alias', targets: [target] } : { kind: 'unknown' };
  }

  private aliasTargets(address: string): Promise<string[] | null> {
    return this.cached(ALIAS + address, async () => parseJson<{ targets: string[] }>(await this.store.get(ALIAS + address), ALIAS + address, this.log)?.targets ?? null);
  }

  private userRecord(address: string): Promise<UserRecord | null> {
    return this.cached(USER + address, () => this.readUser(address));
  }

  private async readUser(address: string): Promise<UserRecord | null> {
    return parseJson<UserRecord>(await this.store.get(USER + address), USER + address, this.log);
  }

  /** Positive results are cached; a miss is asked again next time (a new entry shows at once). */
  private async cached<T>(key: string, load: () => Promise<T | null>): Promise<T | null> {
    if (this.cache.has(key)) return this.cache.get(key) as T;
    const epoch = this.epoch;
    const v = await load();
    if (v !== null) this.cacheSet(key, v, epoch);
    return v;
  }

  private cacheSet(key: string, v: unknown, epoch: number): void {
    if (epoch !== this.epoch) return;
    if (this.cache.size >= MAX_CACHE) this.cache.clear();
    this.cache.set(key, v);
  }

  /**
   * Checks that `address` may hold a user or alias (parsable, no routing tricks, in a local
   * domain) and returns its canonical form; throws DirectoryError otherwise.
   */
  checkEntryAddress(address: string): string {
    return this.localEntry(address).address;
  }

  private localEntry(address: string): Canonical {
    const a = canonical(address);
    const bad = a.tricks.filter((t) => REFUSED_TRICKS.includes(t));
    if (bad.length) throw new DirectoryError('invalid-address', `address "${address}" is not allowed here (${bad.join(', ')})`);
    if (!this.isLocalDomain(a.domain)) throw new DirectoryError('not-local', `domain ${a.domain} of ${a.address} is not in domains.local`);
    return a;
  }

  /** An alias or catch-all target: local ones canonical, remote ones as written (domain lower-cased). */
  private target(t: string): string {
    let a: Canonical;
    try {
      a = canonical(t);
    } catch (e) {
      if (e instanceof DirectoryError) throw new DirectoryError('invalid-target', e.message);
      throw e;
    }
    const bad = a.tricks.filter((x) => REFUSED_TRICKS.includes(x));
    if (bad.length) throw new DirectoryError('invalid-target', `target "${t}" is not allowed (${bad.join(', ')})`);
    return this.isLocalDomain(a.domain) ? a.address : parseAddress(t).address;
  }

  private async changed(op: string, subject: string): Promise<void> {
    this.invalidate();
    this.log.info({ evt: 'directory.changed', op, subject }, 'directory changed');
    await this.store.publish(DIRECTORY_CHANNEL, JSON.stringify({ op, subject }));
  }
}

export function createDirectory(opts: DirectoryOptions): StoreDirectory {
  return new StoreDirectory(opts);
}

function toUser(rec: UserRecord | null): User | null {
  if (!rec) return null;
  const u: User = { address: rec.address, createdAt: rec.createdAt };
  if (rec.passwordHash) u.passwordHash = rec.passwordHash;
  return u;
}

function parseJson<T>(text: string | null, key: string, log: Logger): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    log.error({ evt: 'store.error', key, err }, 'directory: unreadable entry ignored');
    return null;
  }
}
