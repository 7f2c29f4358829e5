// Options of the rspamd plugin (plugins: [ { rspamd: { host: 127.0.0.1, port: 11333 } } ]).
import { z } from 'zod';
import { size } from '../../src/config/units.js';
import { endpointFields, endpointProblem } from '../../src/pipeline/scanner/connection.js';

const oneLine = z
  .string()
  .min(1)
  .refine((s) => !/[\r\n]/.test(s), 'must be one line');

export const configSchema = z
  .object({
    /** rspamd's normal worker (port 11333), or its unix socket. */
    ...endpointFields,
    /** `Password` header, for a worker that asks for one. */
    password: z.string().min(1).optional(),
    /** Messages larger than this are not sent (traced as not scanned). */
    max_size: size().prefault('25M'),
    /** Honour the "greylist" action with a 451 4.7.1 (off: treated as no action). */
    greylist: z.boolean().default(true),
    /** Subject for "rewrite subject" when rspamd sends none; %s is the original subject. */
    subject_template: oneLine.default('***SPAM*** %s'),
    reject_text: oneLine.default('Message refused as spam'),
    soft_reject_text: oneLine.default('Try again later'),
    /** The score Sieve spamtest scales against; default: the global sieve.spamtest.max. */
    spamtest_max: z.number().positive().optional(),
    /** Scan mail from authenticated users and trusted networks too (rspamd gets User for them). */
    scan_relaying: z.boolean().default(true),
  })
  .strict()
  .superRefine((c, ctx) => {
    const p = endpointProblem(c);
    if (p) ctx.addIssue({ code: 'custom', message: p, path: ['socket'] });
  });

export type RspamdConfig = z.infer<typeof configSchema>;
