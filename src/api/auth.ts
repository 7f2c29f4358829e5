// Bearer tokens (RFC 6750) for the REST API: the ones in the config (`api.tokens`) and the ones
// created at run time (POST /v1/tokens), kept in the store hash `api:tokens` (id → JSON with the
// token's sha256, never the token itself). Every change is published on the `api-tokens` channel,
// so every node drops its cached copy; the cache also expires after a second.
//
// A presented token is hashed once and compared with every known hash using timingSafeEqual,
// without stopping at the first match, so the time taken says nothing about which (or whether a)
// token matched. Scopes nest: admin ⊃ write ⊃ read.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/store.js';
import type { ApiTokenConfig, Scope } from './config.js';
import { ApiProblem } from './errors.js';

export const TOKENS_KEY = 'api:tokens';
export const TOKENS_CHANNEL = 'api-tokens';
const CACHE_MS = 1000;

export interface Principal {
  /** The token's name (audit "who"); config tokens without a name are "config-<n>". */
  name: string;
  scopes: Scope[];
  /** Store id for run-time tokens; absent for config tokens. */
  id?: string;
}

export interface StoredToken {
  id: string;
  name: string;
  scopes: Scope[];
  created_at: string;
  created_by: string;
  /** "sha256:<hex>" */
  hash: string;
}

interface Known extends Principal {
  digest: Buffer;
}

export const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** A new random token, URL-safe, 32 bytes of entropy. */
export const newTokenSecret = () => `pst_${randomBytes(32).toString('base64url')}`;

export const hashToken = (token: string) => `sha256:${sha256(token).toString('hex')}`;

const RANK: Record<Scope, number> = { read: 1, write: 2, admin: 3 };

export function allows(scopes: readonly Scope[], needed: Scope): boolean {
  return scopes.some((s) => RANK[s] >= RANK[needed]);
}

export class TokenAuth {
  private readonly fromConfig: Known[];
  private cached: { at: number; tokens: Known[] } | null = null;
  private readonly unsubscribe: () => void;

  constructor(
    configured: ApiTokenConfig[],
    private readonly store: Store,
  ) {
    this.fromConfig = configured.map((t, i) => ({
      name: t.name ?? `config-${i}`,
      scopes: t.scopes ?? [t.scope],
      digest: t.token !== undefined ? sha256(t.token) : Buffer.from(t.token_hash!.slice('sha256:'.length), 'hex'),
    }));
    this.unsubscribe = store.subscribe(TOKENS_CHANNEL, () => (this.cached = null));
  }

  close(): void {
    this.unsubscribe();
  }

  /** Drops the cached store tokens (this node changed them; other nodes hear the event). */
  invalidate(): void {
    this.cached = null;
  }

  private async stored(): Promise<Known[]> {
    if (this.cached && Date.now() - this.cached.at < CACHE_MS) return this.cached.tokens;
    const all = await this.store.hgetall(TOKENS_KEY);
    const tokens: Known[] = [];
    for (const raw of Object.values(all)) {
      try {
        const t = JSON.parse(raw) as StoredToken;
        tokens.push({ id: t.id, name: t.name, scopes: t.scopes, digest: Buffer.from(t.hash.slice('sha256:'.length), 'hex') });
      } catch {
        /* a damaged entry authenticates nobody */
      }
    }
    this.cached = { at: Date.now(), tokens };
    return tokens;
  }

  /** The principal for an Authorization header value; throws 401 when it names no known token. */
  async authenticate(header: string | undefined): Promise<Principal> {
    const m = /^Bearer[ ]+([\x21-\x7e]+)\s*$/i.exec(header ?? '');
    if (!m) throw new ApiProblem('unauthorized', header ? 'the Authorization header is not "Bearer <token>"' : 'no Authorization header', { headers: { 'www-authenticate': 'Bearer realm="postern"' } });
    const digest = sha256(m[1]!);
    let found: Known | null = null;
    for (const k of [...this.fromConfig, ...(await this.stored())]) {
      // Every candidate is compared: no early exit.
      if (k.digest.length === digest.length && timingSafeEqual(k.digest, digest) && !found) found = k;
    }
    if (!found) throw new ApiProblem('unauthorized', 'unknown token', { headers: { 'www-authenticate': 'Bearer realm="postern", error="invalid_token"' } });
    return { name: found.name, scopes: found.scopes, ...(found.id ? { id: found.id } : {}) };
  }

  /** Names already taken (config and store), for 409 on a duplicate name. */
  async names(): Promise<Set<string>> {
    return new Set([...this.fromConfig, ...(await this.stored())].map((k) => k.name));
  }
}

export function requireScope(p: Principal, needed: Scope): void {
  if (!allows(p.scopes, needed)) throw new ApiProblem('forbidden', `this call needs the ${needed} scope; the token "${p.name}" has ${p.scopes.join(', ')}`);
}
