// The audit trail of every change made through the API: who (the token's name), when, what (the
// method and path, and a short action name) and the resource before and after. Kept in the store
// hash `api:audit` (zero-padded sequence number → JSON), the newest MAX_ENTRIES; the sequence is
// the counter `api:audit:seq`, so entries from several nodes interleave in one order.
import type { Store } from '../store/store.js';

export const AUDIT_KEY = 'api:audit';
export const AUDIT_SEQ = 'api:audit:seq';
export const MAX_ENTRIES = 10_000;

export interface AuditEntry {
  id: number;
  at: string;
  token: string;
  action: string;
  method: string;
  path: string;
  resource: string;
  before: unknown;
  after: unknown;
}

const field = (n: number) => String(n).padStart(12, '0');

export class AuditLog {
  constructor(private readonly store: Store) {}

  async record(e: Omit<AuditEntry, 'id' | 'at'>): Promise<AuditEntry> {
    const id = await this.store.incr(AUDIT_SEQ);
    const entry: AuditEntry = { id, at: new Date().toISOString(), ...e, before: e.before ?? null, after: e.after ?? null };
    await Promise.all([this.store.hset(AUDIT_KEY, field(id), JSON.stringify(entry)), ...(id > MAX_ENTRIES ? [this.store.hdel(AUDIT_KEY, field(id - MAX_ENTRIES))] : [])]);
    return entry;
  }

  /** Newest first. */
  async list(filter: { token?: string; resource?: string; action?: string; since?: string; limit: number }): Promise<AuditEntry[]> {
    const all = await this.store.hgetall(AUDIT_KEY);
    const out: AuditEntry[] = [];
    for (const k of Object.keys(all).sort().reverse()) {
      const e = JSON.parse(all[k]!) as AuditEntry;
      if (filter.token !== undefined && e.token !== filter.token) continue;
      if (filter.resource !== undefined && !e.resource.startsWith(filter.resource)) continue;
      if (filter.action !== undefined && e.action !== filter.action) continue;
      if (filter.since !== undefined && e.at < filter.since) continue;
      out.push(e);
      if (out.length >= filter.limit) break;
    }
    return out;
  }
}
