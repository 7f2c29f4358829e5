// Config keys owned by Sieve: `sieve`.
//   extensions: the capabilities scripts may `require` (default: every one this build has); a
//     script that requires another fails to compile, wherever it is compiled (admin rules, the
//     gateway's script files, users' scripts over ManageSieve, the REST API, `postern sieve test`,
//     and `postern sieve check --config`), and ManageSieve advertises only these.
import { z } from 'zod';
import { duration } from '../config/units.js';
import type { CompileOptions } from './compile.js';
import { capabilities } from './extensions/index.js';

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
    extensions: z
      .array(z.string().min(1))
      .superRefine((names, ctx) => {
        const known = capabilities();
        names.forEach((name, i) => {
          if (!known.includes(name.toLowerCase())) ctx.addIssue({ code: 'custom', path: [i], message: `unknown Sieve extension '${name}'` });
        });
      })
      .optional(),
  })
  .strict();

export type SieveConfig = z.infer<typeof sieveSchema>;

/** What every compile of a script takes from `sieve`: the redirect limit and the extensions. */
export function compileOptions(config: SieveConfig): CompileOptions {
  return { limits: { maxRedirects: config.limits.max_redirects }, ...(config.extensions ? { extensions: config.extensions } : {}) };
}

/** The capabilities to advertise (ManageSieve): the enabled ones, in the registry's order. */
export function enabledCapabilities(config: SieveConfig): string[] {
  const on = config.extensions?.map((e) => e.toLowerCase());
  return on ? capabilities().filter((c) => on.includes(c)) : capabilities();
}
