// One run-time policy collection kept in a store hash (written by the REST API, read by the
// pipeline on every transaction, so a change applies to the next one on every node). Reading it
// fresh each time keeps every node within one store round trip of the API; the Redis driver
// answers from its last known values while Redis is unreachable (src/store/last-known.ts covers
// `policy:`), and this class keeps the last good parse on top of that, so a store that cannot be
// read at all still leaves the node with the policy it last saw (or none, before the first read).
// Entries that do not parse are skipped and logged once per read: a damaged entry matches nothing.
import type { Logger } from 'pino';
import type { Store } from '../store/store.js';

export class PolicyHash<T> {
  private lastGood: T[] = [];
  private readOnce = false;
  private failed = false;

  constructor(
    private readonly store: Store | undefined,
    readonly key: string,
    private readonly parse: (raw: string, field: string) => T,
  ) {}

  /** The entries now; on a store failure, the last ones read (logged as store.error). */
  async entries(log?: Logger): Promise<T[]> {
    if (!this.store || !this.key) return [];
    let all: Record<string, string>;
    try {
      all = await this.store.hgetall(this.key);
    } catch (err) {
      log?.warn({ evt: 'store.error', err, key: this.key }, 'cannot read run-time policy; using the last known entries');
      this.failed = true;
      return this.lastGood;
    }
    this.readOnce = true;
    const out: T[] = [];
    for (const [field, raw] of Object.entries(all)) {
      try {
        out.push(this.parse(raw, field));
      } catch (err) {
        log?.warn({ evt: 'plugin.error', key: this.key, field, err: err instanceof Error ? err.message : String(err) }, 'ignoring a damaged run-time policy entry');
      }
    }
    this.lastGood = out;
    return out;
  }

  /**
   * True while reads have failed and none has succeeded yet: `entries()` then stood in with none,
   * which may hide entries that exist.
   */
  get unknown(): boolean {
    return this.failed && !this.readOnce;
  }
}
