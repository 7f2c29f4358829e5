// Config keys owned by Sieve: `sieve`.
import { z } from 'zod';
import { duration } from '../config/units.js';

export const sieveSchema = z
  .object({
    vacation: z
      .object({ min_period: duration().prefault('1d'), default_period: duration().prefault('7d') })
      .strict()
      .prefault({}),
    spamtest: z
      .object({ header: z.string().default('X-Spam-Score'), max: z.number().positive().default(10) })
      .strict()
      .prefault({}),
    virustest: z
      .object({
        header: z.string().default('X-Virus-Status'),
        values: z.record(z.string(), z.number().int().min(0).max(5)).default({ clean: 1, infected: 5 }),
      })
      .strict()
      .prefault({}),
    limits: z.object({ max_redirects: z.number().int().min(0).default(4) }).strict().prefault({}),
  })
  .strict();

export type SieveConfig = z.infer<typeof sieveSchema>;
