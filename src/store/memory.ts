// The in-memory Store: the Store contract (store.ts) held in one process's memory, with Redis's
// semantics for the subset we use (GET/SET NX PX, DEL, INCRBY with a TTL on creation, PTTL,
// HGET/HSET/HDEL/HGETALL, SCAN MATCH prefix*, PUBLISH/SUBSCRIBE inside this process).
// It backs the plugin test harness and is the base the embedded (persisted) driver may wrap.
// Nothing is persisted; expired keys vanish on access and in a periodic (unref'd) sweep.
//
// Like Redis, a key holds one type: a hash operation on a string key (or the reverse) fails with
// WRONGTYPE, and INCR on a non-integer value fails. After close() every call rejects.
// Config keys read: none.
import { Subscribers } from './subscribers.js';
import type { ChangeEvent, SetOptions, Store } from './store.js';

type Entry = { kind: 'string'; value: string; expiresAt: number } | { kind: 'hash'; fields: Map<string, string>; expiresAt: number };

/** No expiry. */
const NEVER = Infinity;

export class StoreTypeError extends Error {
  constructor(readonly key: string) {
    super(`WRONGTYPE operation against key "${key}" holding the wrong kind of value`);
    this.name = 'StoreTypeError';
  }
}

export interface MemoryStoreOptions {
  /** Clock, for tests that move time; defaults to Date.now. */
  now?: () => number;
  /** How often expired keys are swept (ms); 0 turns the sweep off (they still vanish on access). */
  sweepIntervalMs?: number;
}

export class MemoryStore implements Store {
  private readonly data = new Map<string, Entry>();
  private readonly subscribers = new Subscribers();
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: MemoryStoreOptions = {}) {
    this.now = opts.now ?? Date.now;
    const every = opts.sweepIntervalMs ?? 60_000;
    if (every > 0) {
      this.sweeper = setInterval(() => this.sweep(), every);
      this.sweeper.unref();
    }
  }

  /** Number of live keys (tests and metrics). */
  get size(): number {
    this.sweep();
    return this.data.size;
  }

  async get(key: string): Promise<string | null> {
    const e = this.live(key);
    if (!e) return null;
    if (e.kind !== 'string') throw new StoreTypeError(key);
    return e.value;
  }

  async set(key: string, value: string, opts: SetOptions = {}): Promise<boolean> {
    const e = this.live(key);
    if (opts.ifAbsent && e) return false;
    // SET replaces whatever was there, of any type, and its TTL (Redis semantics).
    this.data.set(key, { kind: 'string', value: String(value), expiresAt: this.expiry(opts.ttlMs) });
    return true;
  }

  async del(...keys: string[]): Promise<number> {
    this.check();
    let n = 0;
    for (const k of keys) if (this.live(k) && this.data.delete(k)) n++;
    return n;
  }

  async incr(key: string, opts: { by?: number; ttlMs?: number } = {}): Promise<number> {
    const by = opts.by ?? 1;
    if (!Number.isInteger(by)) throw new RangeError('incr: `by` must be an integer');
    const e = this.live(key);
    if (!e) {
      this.data.set(key, { kind: 'string', value: String(by), expiresAt: this.expiry(opts.ttlMs) });
      return by;
    }
    if (e.kind !== 'string') throw new StoreTypeError(key);
    if (!/^-?\d+$/.test(e.value)) throw new Error(`ERR value of "${key}" is not an integer`);
    const n = Number(e.value) + by;
    e.value = String(n);
    return n;
  }

  async ttl(key: string): Promise<number> {
    const e = this.live(key);
    if (!e) return -2;
    if (e.expiresAt === NEVER) return -1;
    return Math.max(0, e.expiresAt - this.now());
  }

  async hget(key: string, field: string): Promise<string | null> {
    return this.hash(key, false)?.get(field) ?? null;
  }

  async hset(key: string, field: string, value: string): Promise<void> {
    this.hash(key, true)!.set(field, String(value));
  }

  async hdel(key: string, ...fields: string[]): Promise<number> {
    const h = this.hash(key, false);
    if (!h) return 0;
    let n = 0;
    for (const f of fields) if (h.delete(f)) n++;
    // Redis removes a hash whose last field went.
    if (h.size === 0) this.data.delete(key);
    return n;
  }

  async hgetall(key: string): Promise<Record<string, string>> {
    const h = this.hash(key, false);
    return h ? Object.fromEntries(h) : {};
  }

  async keys(prefix: string): Promise<string[]> {
    this.check();
    this.sweep();
    return [...this.data.keys()].filter((k) => k.startsWith(prefix));
  }

  async publish(channel: string, message: string): Promise<void> {
    this.check();
    if (!this.subscribers.has(channel)) return;
    // Delivered on a later turn of the event loop, as a Redis subscriber sees it: never
    // re-entrant, never before publish() has returned to its caller.
    setImmediate(() => this.subscribers.deliver({ channel, message }));
  }

  subscribe(channel: string, handler: (ev: ChangeEvent) => void): () => void {
    this.check();
    return this.subscribers.add(channel, handler);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.subscribers.clear();
    this.data.clear();
  }

  /** Removes every expired key now. */
  sweep(): void {
    const t = this.now();
    for (const [k, e] of this.data) if (e.expiresAt <= t) this.data.delete(k);
  }

  private check(): void {
    if (this.closed) throw new Error('store is closed');
  }

  private expiry(ttlMs: number | undefined): number {
    if (ttlMs === undefined) return NEVER;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError('ttlMs must be a positive number');
    return this.now() + ttlMs;
  }

  /** The entry if present and not expired; an expired one is removed on the way. */
  private live(key: string): Entry | undefined {
    this.check();
    const e = this.data.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.data.delete(key);
      return undefined;
    }
    return e;
  }

  private hash(key: string, create: boolean): Map<string, string> | undefined {
    const e = this.live(key);
    if (!e) {
      if (!create) return undefined;
      const fields = new Map<string, string>();
      this.data.set(key, { kind: 'hash', fields, expiresAt: NEVER });
      return fields;
    }
    if (e.kind !== 'hash') throw new StoreTypeError(key);
    return e.fields;
  }
}

export function createMemoryStore(opts?: MemoryStoreOptions): MemoryStore {
  return new MemoryStore(opts);
}
