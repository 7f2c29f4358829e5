// `routes` lookups, shared by the SMTP front end (is this a domain we accept mail for?), the
// relay-acl plugin and the router (which next hop?). A key "corp.example" matches that domain
// exactly; a key ".corp.example" matches every subdomain of it (not corp.example itself). The
// exact key wins, then the nearest wildcard.
// Config keys read: routes (src/policy/routes.ts adds the routes kept in the store on top).
import type { RouteConfig } from './config.js';

export interface RouteMatch {
  /** The routes key that matched, normalised (lower case, no trailing dot). */
  key: string;
  route: RouteConfig;
}

export class RouteTable {
  private readonly byKey = new Map<string, RouteConfig>();

  constructor(routes: Record<string, RouteConfig>) {
    for (const [k, v] of Object.entries(routes)) this.byKey.set(k.toLowerCase().replace(/\.$/, ''), v);
  }

  /** From key/route pairs in order; of two equal keys (after normalising) the later one wins. */
  static fromEntries(entries: Iterable<[string, RouteConfig]>): RouteTable {
    const t = new RouteTable({});
    for (const [k, v] of entries) t.byKey.set(k.toLowerCase().replace(/\.$/, ''), v);
    return t;
  }

  find(domain: string): RouteMatch | null {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const exact = this.byKey.get(d);
    if (exact) return { key: d, route: exact };
    // Nearest wildcard first: a.b.c.example tries .b.c.example, .c.example, .example.
    const labels = d.split('.');
    for (let i = 1; i < labels.length; i++) {
      const key = `.${labels.slice(i).join('.')}`;
      const route = this.byKey.get(key);
      if (route) return { key, route };
    }
    return null;
  }

  has(domain: string): boolean {
    return this.find(domain) !== null;
  }
}
