// Last known values of the keys a node needs to keep serving while its Redis is unreachable:
// the directory (is this recipient ours?), relay policy, admin and user Sieve rules, API tokens.
// The Redis driver (redis.ts) records here what it reads and writes for the covered keys, and
// loads every covered key when a connection becomes ready ("warm"). During an outage it answers
// reads of covered keys from here; everything else fails with StoreUnavailableError.
//
// What "known" means:
//   - a slot per key: a string, a hash (all its fields, or only the fields seen so far), "none"
//     (the key was absent), or "unknown" (a TTL'd write or an INCR: not worth keeping);
//   - a covered prefix that has been warmed in full also knows which keys it does NOT hold: a key
//     under it without a slot is absent.
// Ordering: every Redis command of the driver's main connection takes a sequence number when it
// is sent, and Redis answers them in that order; a result is recorded only if no later command
// already recorded the key. So a warm that read a key before a local write cannot bring the old
// value back, and the cache is never older than what this node last saw.
//
// Entries in `patterns` ending in ':' are prefixes, others exact keys. At most `maxKeys` slots are
// kept; past that, new keys are not recorded (and reads of them during an outage fail).
// Config keys read: `store.last_known` (by the caller, which passes the patterns in).

export type Known = { kind: 'none' } | { kind: 'unknown' } | { kind: 'string'; value: string } | { kind: 'hash'; fields: Map<string, string | null>; complete: boolean };

interface Slot {
  known: Known;
  seq: number;
}

/** The default `store.last_known`: what the accept path and delivery read. */
export const DEFAULT_LAST_KNOWN = ['dir:', 'policy:', 'sieve:rules', 'sieve:rules:meta', 'sieve:rules:version', 'sieve:scripts:', 'sieve:active:', 'api:tokens'];

export const DEFAULT_MAX_KEYS = 200_000;

const NONE: Known = { kind: 'none' };
const UNKNOWN: Known = { kind: 'unknown' };

/** A read answered from here: `hit` false means nothing is known and the caller must fail. */
export type Lookup<T> = { hit: true; value: T } | { hit: false };
const MISS = { hit: false } as const;
const hit = <T>(value: T): Lookup<T> => ({ hit: true, value });

export class LastKnown {
  readonly prefixes: string[];
  readonly exact: Set<string>;
  private readonly slots = new Map<string, Slot>();
  private readonly warmed = new Set<string>();
  private seq = 0;
  private full = false;

  constructor(
    patterns: string[],
    private readonly maxKeys = DEFAULT_MAX_KEYS,
    private readonly onFull: () => void = () => undefined,
  ) {
    this.prefixes = [...new Set(patterns.filter((p) => p.endsWith(':')))];
    this.exact = new Set(patterns.filter((p) => !p.endsWith(':')));
  }

  /** Sequence number for a command about to be sent. */
  next(): number {
    return ++this.seq;
  }

  get size(): number {
    return this.slots.size;
  }

  covers(key: string): boolean {
    return this.exact.has(key) || this.prefixes.some((p) => key.startsWith(p));
  }

  // ------------------------------------------------------------------ recording

  /** What a command sent at `seq` learnt about `key`. */
  put(key: string, known: Known, seq: number): void {
    if (!this.covers(key)) return;
    const cur = this.slots.get(key);
    if (cur && cur.seq > seq) return;
    if (!cur && this.slots.size >= this.maxKeys) {
      if (!this.full) {
        this.full = true;
        this.onFull();
      }
      return;
    }
    this.slots.set(key, { known, seq });
  }

  putString(key: string, value: string | null, seq: number): void {
    this.put(key, value === null ? NONE : { kind: 'string', value }, seq);
  }

  putHash(key: string, all: Record<string, string>, seq: number): void {
    const entries = Object.entries(all);
    this.put(key, entries.length ? { kind: 'hash', fields: new Map(entries), complete: true } : NONE, seq);
  }

  /** The key now holds something this cache does not keep (a TTL'd value, a counter). */
  forget(key: string, seq: number): void {
    this.put(key, UNKNOWN, seq);
  }

  /** One field seen (hget) or written (hset, value null: hdel). */
  putField(key: string, field: string, value: string | null, seq: number): void {
    if (!this.covers(key)) return;
    const cur = this.slots.get(key);
    if (cur && cur.seq > seq) return;
    let known: Known;
    if (cur?.known.kind === 'hash') {
      const fields = new Map(cur.known.fields);
      if (value === null && cur.known.complete) fields.delete(field);
      else fields.set(field, value);
      known = cur.known.complete && fields.size === 0 ? NONE : { kind: 'hash', fields, complete: cur.known.complete };
    } else if (cur?.known.kind === 'none' || (!cur && this.warmedUnder(key))) {
      // Absent before: a written field makes it a one-field hash; a deleted one changes nothing.
      known = value === null ? NONE : { kind: 'hash', fields: new Map([[field, value]]), complete: true };
    } else {
      known = { kind: 'hash', fields: new Map([[field, value]]), complete: false };
    }
    this.put(key, known, seq);
  }

  /**
   * A prefix has been scanned in full by a warm that started at `seq`: slots under it that the
   * warm did not refresh (and nothing touched since) belong to keys that are gone.
   */
  finishPrefix(prefix: string, seq: number): void {
    for (const [key, slot] of this.slots) if (key.startsWith(prefix) && slot.seq < seq) this.slots.delete(key);
    this.warmed.add(prefix);
  }

  // ------------------------------------------------------------------ answering

  get(key: string): Lookup<string | null> {
    const k = this.known(key);
    if (k?.kind === 'none') return hit(null);
    if (k?.kind === 'string') return hit(k.value);
    return MISS;
  }

  hget(key: string, field: string): Lookup<string | null> {
    const k = this.known(key);
    if (k?.kind === 'none') return hit(null);
    if (k?.kind !== 'hash') return MISS;
    const v = k.fields.get(field);
    if (v !== undefined) return hit(v);
    return k.complete ? hit(null) : MISS;
  }

  hgetall(key: string): Lookup<Record<string, string>> {
    const k = this.known(key);
    if (k?.kind === 'none') return hit({});
    if (k?.kind !== 'hash' || !k.complete) return MISS;
    return hit(Object.fromEntries([...k.fields].filter((e): e is [string, string] => e[1] !== null)));
  }

  /** Keys with `prefix`, when a warmed covered prefix contains it. */
  keys(prefix: string): Lookup<string[]> {
    if (![...this.warmed].some((w) => prefix.startsWith(w))) return MISS;
    const out: string[] = [];
    for (const [key, slot] of this.slots) {
      if (!key.startsWith(prefix)) continue;
      if (slot.known.kind === 'unknown') return MISS;
      if (slot.known.kind !== 'none') out.push(key);
    }
    return hit(out);
  }

  /** The slot's knowledge; a missing slot under a warmed prefix means absent. */
  private known(key: string): Known | undefined {
    const slot = this.slots.get(key);
    if (slot) return slot.known;
    return this.warmedUnder(key) ? NONE : undefined;
  }

  private warmedUnder(key: string): boolean {
    for (const w of this.warmed) if (key.startsWith(w)) return true;
    return false;
  }
}
