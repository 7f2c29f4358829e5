// The state store: the one door to state shared between connections and, with the Redis driver,
// between nodes. Directory, policies, rules, counters with a TTL, caches and change events all go
// through it. Its semantics are Redis's own subset, so the embedded driver (one node, persisted
// under data_dir) and the Redis driver behave the same: a test suite runs against both.
//
// Keys are plain strings with ':' as the namespace separator ("user:alice@example.test",
// "dnsbl:zen.example:2.0.0.127"). Values are strings; callers JSON-encode structured values.

export interface SetOptions {
  /** Expire after this many milliseconds. */
  ttlMs?: number;
  /** Only set when the key does not exist (SET NX); `set` then returns false if it did. */
  ifAbsent?: boolean;
}

export interface ChangeEvent {
  /** The channel the change was published on, e.g. "directory" or "rules". */
  channel: string;
  /** Free-form payload (JSON text by convention). */
  message: string;
}

/**
 * Whether the store can be reached now (the future `/readyz` reports "degraded" when not).
 * The memory driver is always healthy, the embedded one unless its files are in a newer format;
 * see `storeHealth`.
 */
export interface StoreHealth {
  driver: 'embedded' | 'memory' | 'redis';
  healthy: boolean;
  /** When `healthy` last changed (ms since the epoch). */
  since: number;
  /** Why it is unhealthy (the last connection error), when it is. */
  error?: string;
  /** How many keys' last known values are held for an outage (redis only). */
  lastKnownKeys?: number;
}

export interface Store {
  get(key: string): Promise<string | null>;
  /** Returns false only when `ifAbsent` was given and the key existed. */
  set(key: string, value: string, opts?: SetOptions): Promise<boolean>;
  /** Returns how many of the keys existed. */
  del(...keys: string[]): Promise<number>;
  /**
   * Adds `by` (default 1) and returns the new value; a missing key starts at 0. `ttlMs` is set
   * only when the key is created, so a window counter expires `ttlMs` after its first hit.
   */
  incr(key: string, opts?: { by?: number; ttlMs?: number }): Promise<number>;
  /** Remaining time to live in ms; -1 without expiry, -2 when the key does not exist (as PTTL). */
  ttl(key: string): Promise<number>;

  /** Hashes (HGET/HSET/HDEL/HGETALL): collections such as users or relay networks. */
  hget(key: string, field: string): Promise<string | null>;
  hset(key: string, field: string, value: string): Promise<void>;
  hdel(key: string, ...fields: string[]): Promise<number>;
  hgetall(key: string): Promise<Record<string, string>>;

  /** Keys that start with `prefix`, in no particular order (SCAN MATCH prefix*). */
  keys(prefix: string): Promise<string[]>;

  /** Tells every subscriber, in this process and in others sharing the store, about a change. */
  publish(channel: string, message: string): Promise<void>;
  /** Returns an unsubscribe function. Handlers never throw into the store. */
  subscribe(channel: string, handler: (ev: ChangeEvent) => void): () => void;

  close(): Promise<void>;

  /**
   * Optional: reachability of the store (src/store/health.ts `storeHealth` answers for drivers
   * without it). Cheap, synchronous, never throws.
   */
  health?(): StoreHealth;

  /**
   * Optional: resolves once the store is ready to be used or known to be unreachable for now
   * (a Redis store's first connection attempt); rejects with StoreFormatError when its data is
   * in a format this build does not read. Drivers that open synchronously throw that at open.
   */
  ready?(): Promise<void>;
}
