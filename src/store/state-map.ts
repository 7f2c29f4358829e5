// The in-memory image of the embedded store and the journal entries that change it. Every write
// is first turned into entries (`plan*`, which never mutates), then applied with `apply`, the same
// function that replays the journal at start-up and tails other processes' writes, so a live
// process and a replay always reach the same state.
//
// Entries carry effects, not commands: INCR is journaled as the SET of its result, and a TTL as an
// absolute expiry time (ms since the epoch), so replaying an old entry never extends a key's life.
// Processes sharing a store share one host clock. Semantics follow Redis for the subset in
// store.ts (SET NX PX, DEL, INCRBY keeping the TTL, PTTL, HSET/HDEL/HGETALL, SCAN MATCH prefix*).
// Config keys read: none.
import { StoreTypeError } from './memory.js';

/** One line of the journal (JSON). Short names keep hot counters' lines small. */
export type JournalEntry =
  /** SET; `x` = absolute expiry (ms since the epoch), absent = persistent. */
  | { o: 'set'; k: string; v: string; x?: number }
  | { o: 'del'; k: string[] }
  | { o: 'hset'; k: string; f: string; v: string }
  | { o: 'hdel'; k: string; f: string[] }
  /** PUBLISH: changes nothing, delivered to subscribers in every process that reads it. */
  | { o: 'pub'; c: string; m: string };

type Entry = { kind: 'string'; value: string; expiresAt: number } | { kind: 'hash'; fields: Map<string, string> };

const NEVER = Infinity;

/**
 * The format of the embedded store's files (snapshot and journal) that this build reads and
 * writes. A build that changes what an older one would misread (a new entry kind, a new meaning)
 * raises it, and older builds then refuse the files instead of skipping what they do not know
 * (embedded.ts).
 */
export const STORE_FORMAT = 1;

/** The snapshot file's content (`store.snapshot.json`). */
export interface Snapshot {
  format: 'postern-store';
  version: typeof STORE_FORMAT;
  /** Generation: the journal that continues this snapshot is `store.journal.<gen>.jsonl`. */
  gen: number;
  /** [key, value, expiresAt | null] */
  strings: [string, string, number | null][];
  hashes: [string, Record<string, string>][];
}

export interface Planned<T> {
  entries: JournalEntry[];
  result: T;
}

export class StateMap {
  private readonly data = new Map<string, Entry>();

  get size(): number {
    return this.data.size;
  }

  /** True when the entry must be fsynced before the write is acknowledged (see embedded.ts). */
  static durable(e: JournalEntry): boolean {
    if (e.o === 'pub') return false;
    if (e.o === 'set') return e.x === undefined;
    return true;
  }

  /** Checks a parsed journal line; null when it is not an entry (corrupt or from a newer version). */
  static validate(raw: unknown): JournalEntry | null {
    if (typeof raw !== 'object' || raw === null) return null;
    const e = raw as Record<string, unknown>;
    const str = (v: unknown) => typeof v === 'string';
    const strs = (v: unknown) => Array.isArray(v) && v.every(str);
    switch (e.o) {
      case 'set':
        return str(e.k) && str(e.v) && (e.x === undefined || typeof e.x === 'number') ? (raw as JournalEntry) : null;
      case 'del':
        return strs(e.k) ? (raw as JournalEntry) : null;
      case 'hset':
        return str(e.k) && str(e.f) && str(e.v) ? (raw as JournalEntry) : null;
      case 'hdel':
        return str(e.k) && strs(e.f) ? (raw as JournalEntry) : null;
      case 'pub':
        return str(e.c) && str(e.m) ? (raw as JournalEntry) : null;
      default:
        return null;
    }
  }

  apply(e: JournalEntry, now: number): void {
    switch (e.o) {
      case 'set': {
        const expiresAt = e.x ?? NEVER;
        if (expiresAt <= now) this.data.delete(e.k);
        else this.data.set(e.k, { kind: 'string', value: e.v, expiresAt });
        return;
      }
      case 'del':
        for (const k of e.k) this.data.delete(k);
        return;
      case 'hset': {
        let cur = this.data.get(e.k);
        // A replayed HSET over a string can only follow that string's expiry: start a new hash.
        if (!cur || cur.kind !== 'hash') this.data.set(e.k, (cur = { kind: 'hash', fields: new Map() }));
        cur.fields.set(e.f, e.v);
        return;
      }
      case 'hdel': {
        const cur = this.data.get(e.k);
        if (!cur || cur.kind !== 'hash') return;
        for (const f of e.f) cur.fields.delete(f);
        // Redis removes a hash whose last field went.
        if (cur.fields.size === 0) this.data.delete(e.k);
        return;
      }
      case 'pub':
        return;
    }
  }

  // ---- reads ----

  get(key: string, now: number): string | null {
    const e = this.live(key, now);
    if (!e) return null;
    if (e.kind !== 'string') throw new StoreTypeError(key);
    return e.value;
  }

  ttl(key: string, now: number): number {
    const e = this.live(key, now);
    if (!e) return -2;
    if (e.kind === 'hash' || e.expiresAt === NEVER) return -1;
    return Math.max(0, e.expiresAt - now);
  }

  hget(key: string, field: string, now: number): string | null {
    return this.hash(key, now)?.get(field) ?? null;
  }

  hgetall(key: string, now: number): Record<string, string> {
    const h = this.hash(key, now);
    return h ? Object.fromEntries(h) : {};
  }

  keys(prefix: string, now: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.data) if (k.startsWith(prefix) && !expired(e, now)) out.push(k);
    return out;
  }

  // ---- writes, planned as entries ----

  planSet(key: string, value: string, ttlMs: number | undefined, ifAbsent: boolean, now: number): Planned<boolean> {
    if (ifAbsent && this.live(key, now)) return { entries: [], result: false };
    // SET replaces whatever was there, of any type, and its TTL (Redis semantics).
    const e: JournalEntry = { o: 'set', k: key, v: value };
    if (ttlMs !== undefined) e.x = expiry(ttlMs, now);
    return { entries: [e], result: true };
  }

  planDel(keys: string[], now: number): Planned<number> {
    const present = [...new Set(keys)].filter((k) => this.live(k, now));
    // Redis counts a key named twice once.
    return { entries: present.length ? [{ o: 'del', k: present }] : [], result: present.length };
  }

  planIncr(key: string, by: number, ttlMs: number | undefined, now: number): Planned<number> {
    if (!Number.isSafeInteger(by)) throw new RangeError('incr: `by` must be an integer');
    const cur = this.live(key, now);
    if (!cur) {
      const e: JournalEntry = { o: 'set', k: key, v: String(by) };
      if (ttlMs !== undefined) e.x = expiry(ttlMs, now);
      return { entries: [e], result: by };
    }
    if (cur.kind !== 'string') throw new StoreTypeError(key);
    if (!/^-?\d+$/.test(cur.value)) throw new Error(`ERR value of "${key}" is not an integer`);
    const n = Number(cur.value) + by;
    if (!Number.isSafeInteger(n)) throw new RangeError(`ERR increment of "${key}" would overflow`);
    // INCR keeps the key's TTL; `ttlMs` applies only on creation.
    const e: JournalEntry = { o: 'set', k: key, v: String(n) };
    if (cur.expiresAt !== NEVER) e.x = cur.expiresAt;
    return { entries: [e], result: n };
  }

  planHset(key: string, field: string, value: string, now: number): Planned<void> {
    this.hash(key, now);
    return { entries: [{ o: 'hset', k: key, f: field, v: value }], result: undefined };
  }

  planHdel(key: string, fields: string[], now: number): Planned<number> {
    const h = this.hash(key, now);
    if (!h) return { entries: [], result: 0 };
    const present = [...new Set(fields)].filter((f) => h.has(f));
    return { entries: present.length ? [{ o: 'hdel', k: key, f: present }] : [], result: present.length };
  }

  // ---- housekeeping ----

  /** Drops expired keys from memory (they are already invisible; this frees the space). */
  sweep(now: number): void {
    for (const [k, e] of this.data) if (expired(e, now)) this.data.delete(k);
  }

  toSnapshot(gen: number, now: number): Snapshot {
    const strings: Snapshot['strings'] = [];
    const hashes: Snapshot['hashes'] = [];
    for (const [k, e] of this.data) {
      if (e.kind === 'hash') hashes.push([k, Object.fromEntries(e.fields)]);
      else if (!expired(e, now)) strings.push([k, e.value, e.expiresAt === NEVER ? null : e.expiresAt]);
    }
    return { format: 'postern-store', version: STORE_FORMAT, gen, strings, hashes };
  }

  static fromSnapshot(s: unknown): { state: StateMap; gen: number } {
    const snap = s as Partial<Snapshot> | null;
    if (!snap || snap.format !== 'postern-store' || snap.version !== STORE_FORMAT || !Number.isSafeInteger(snap.gen) || !Array.isArray(snap.strings) || !Array.isArray(snap.hashes)) {
      throw new Error('not a postern store snapshot (format/version/gen)');
    }
    const state = new StateMap();
    for (const [k, v, x] of snap.strings) state.data.set(k, { kind: 'string', value: v, expiresAt: x ?? NEVER });
    for (const [k, fields] of snap.hashes) state.data.set(k, { kind: 'hash', fields: new Map(Object.entries(fields)) });
    return { state, gen: snap.gen! };
  }

  private live(key: string, now: number): Entry | undefined {
    const e = this.data.get(key);
    if (!e) return undefined;
    if (expired(e, now)) {
      this.data.delete(key);
      return undefined;
    }
    return e;
  }

  private hash(key: string, now: number): Map<string, string> | undefined {
    const e = this.live(key, now);
    if (!e) return undefined;
    if (e.kind !== 'hash') throw new StoreTypeError(key);
    return e.fields;
  }
}

function expired(e: Entry, now: number): boolean {
  return e.kind === 'string' && e.expiresAt <= now;
}

function expiry(ttlMs: number, now: number): number {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError('ttlMs must be a positive number');
  return now + Math.ceil(ttlMs);
}
