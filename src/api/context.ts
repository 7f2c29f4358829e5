// What every route module gets: the shared parts of the daemon, plus the API's own services.
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { Pipeline } from '../pipeline/types.js';
import type { ManagedQueue } from '../queue/manager.js';
import type { Store } from '../store/store.js';
import type { AuditLog } from './audit.js';
import type { Principal, TokenAuth } from './auth.js';
import type { Scope } from './config.js';
import type { ApiMetrics } from './metrics.js';
import type { RuleRepository } from './rules-repository.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
  interface FastifyContextConfig {
    /** The scope a route needs; routes without one are public (health, spec, docs, metrics). */
    scope?: Scope;
  }
}

export interface ApiDeps {
  config: Config;
  store: Store;
  log: Logger;
  /** The daemon's directory; the store-backed one also lists aliases. */
  directory?: Directory & { listAliases?(): Promise<Record<string, string[]>>; getAlias?(address: string): Promise<string[] | null> };
  /** The daemon's plugin chain, for the dry-run (POST /v1/test). */
  pipeline?: Pipeline;
  queue?: ManagedQueue;
}

export interface ApiContext extends ApiDeps {
  auth: TokenAuth;
  audit: AuditLog;
  rules: RuleRepository;
  metrics: ApiMetrics;
}

/** The authenticated principal's name (routes with a scope always have one). */
export function who(req: FastifyRequest): string {
  return req.principal?.name ?? 'anonymous';
}
