// A small in-memory Directory for queue and delivery tests: users, aliases, a catch-all per
// domain and "+detail" subaddressing, as the real directory resolves them.
import type { Directory, Resolution, User } from '../../../src/directory/directory.js';

export class FakeDirectory implements Directory {
  users = new Map<string, User>();
  aliases = new Map<string, string[]>();
  catchAll = new Map<string, string>();
  /** When set, expand/resolve/getUser throw it (a directory outage). */
  failWith: Error | null = null;

  constructor(
    readonly domains: string[],
    users: string[] = [],
  ) {
    for (const u of users) this.users.set(u, { address: u, createdAt: 0 });
  }

  isLocalDomain(domain: string): boolean {
    return this.domains.includes(domain.toLowerCase());
  }

  private norm(a: string): string {
    const at = a.lastIndexOf('@');
    return `${a.slice(0, at)}@${a.slice(at + 1).toLowerCase()}`;
  }

  async expand(address: string, depth = 0): Promise<{ local: { user: string; address: string; detail?: string }[]; remote: string[] } | null> {
    if (this.failWith) throw this.failWith;
    const a = this.norm(address);
    const at = a.lastIndexOf('@');
    const domain = a.slice(at + 1);
    if (!this.isLocalDomain(domain)) return { local: [], remote: [a] };
    if (depth > 5) return null;
    if (this.users.has(a)) return { local: [{ user: a, address: a }], remote: [] };
    const al = this.aliases.get(a);
    if (al) {
      const out = { local: [] as { user: string; address: string }[], remote: [] as string[] };
      for (const t of al) {
        const x = await this.expand(t, depth + 1);
        if (x) {
          out.local.push(...x.local);
          out.remote.push(...x.remote);
        }
      }
      return out;
    }
    const local = a.slice(0, at);
    const plus = local.indexOf('+');
    if (plus > 0) {
      const base = `${local.slice(0, plus)}@${domain}`;
      if (this.users.has(base)) return { local: [{ user: base, address: a, detail: local.slice(plus + 1) }], remote: [] };
    }
    const ca = this.catchAll.get(domain);
    if (ca) return this.expand(ca, depth + 1);
    return null;
  }

  async resolve(address: string): Promise<Resolution> {
    const x = await this.expand(address);
    if (!x) return { kind: 'unknown' };
    return x.local.length === 1 && x.remote.length === 0 ? { kind: 'local', user: x.local[0]!.user } : { kind: 'alias', targets: [...x.local.map((l) => l.user), ...x.remote] };
  }

  async authenticate(): Promise<string | null> {
    return null;
  }
  async getUser(address: string): Promise<User | null> {
    if (this.failWith) throw this.failWith;
    return this.users.get(this.norm(address)) ?? null;
  }
  async listUsers(): Promise<User[]> {
    return [...this.users.values()];
  }
  async addUser(address: string): Promise<User> {
    const u = { address, createdAt: Date.now() };
    this.users.set(address, u);
    return u;
  }
  async setPassword(): Promise<void> {}
  async deleteUser(address: string): Promise<boolean> {
    return this.users.delete(address);
  }
  async setAlias(address: string, targets: string[]): Promise<void> {
    this.aliases.set(address, targets);
  }
  async deleteAlias(address: string): Promise<boolean> {
    return this.aliases.delete(address);
  }
  async setCatchAll(domain: string, target: string | null): Promise<void> {
    if (target) this.catchAll.set(domain, target);
    else this.catchAll.delete(domain);
  }
}
