// Config keys owned by the REST API: `api`.
import { z } from 'zod';

export const apiSchema = z
  .object({
    tokens: z.array(z.object({ token: z.string().min(16), scope: z.enum(['read', 'write']).default('write') }).strict()).default([]),
  })
  .strict();

export type ApiConfig = z.infer<typeof apiSchema>;
