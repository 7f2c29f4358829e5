// Config keys owned by logging: `log`.
import { z } from 'zod';

export const logSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export type LogConfig = z.infer<typeof logSchema>;
