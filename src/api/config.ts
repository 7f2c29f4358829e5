// Config keys owned by the REST API: `api` (the listener itself is `listen.api`, src/smtp/config.ts).
//
//   api:
//     tokens:                      # bearer tokens; more can be created at run time (POST /v1/tokens)
//       - { name: ci, token: "…16+ characters…", scopes: [read, write] }
//       - { name: ops, token_hash: "sha256:<64 hex>", scope: admin }   # only the hash on disk
//     body_limit: 1M               # larger request bodies get 413
//     rate_limit: { requests: 1200, per: 1m }   # per client address; requests: 0 turns it off
//
// Scopes nest: admin ⊃ write ⊃ read. `scope` (one) and `scopes` (a list) are both accepted; the
// CONTRACT.md form is `{ token, scope }`.
import { z } from 'zod';
import { duration, size } from '../config/units.js';

export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

const tokenEntry = z
  .object({
    name: z.string().min(1).max(64).optional(),
    token: z.string().min(16).optional(),
    token_hash: z
      .string()
      .regex(/^sha256:[0-9a-f]{64}$/, { message: 'expected "sha256:" and 64 lower-case hex digits (sha256sum of the token)' })
      .optional(),
    scope: z.enum(SCOPES).default('write'),
    scopes: z.array(z.enum(SCOPES)).min(1).optional(),
  })
  .strict()
  .refine((t) => (t.token === undefined) !== (t.token_hash === undefined), { message: 'give exactly one of token or token_hash' });

export const apiSchema = z
  .object({
    tokens: z.array(tokenEntry).default([]),
    body_limit: size().prefault('1M'),
    rate_limit: z
      .object({
        requests: z.number().int().min(0).default(1200),
        per: duration().prefault('1m'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type ApiConfig = z.infer<typeof apiSchema>;
export type ApiTokenConfig = ApiConfig['tokens'][number];
