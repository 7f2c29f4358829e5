// Options of the spamassassin plugin (plugins: [ { spamassassin: { host: 127.0.0.1, port: 783,
// tag_score: 5, reject_score: 10 } } ]).
import { z } from 'zod';
import { size } from '../../src/config/units.js';
import { endpointFields, endpointProblem } from '../../src/pipeline/scanner/connection.js';

const score = z.number().finite();

export const configSchema = z
  .object({
    ...endpointFields,
    /**
     * The spamd command: symbols (score and rule names, the default), report (score and the
     * report text, for X-Spam-Report), check (score only) or process (SpamAssassin's own
     * X-Spam-* headers are copied from the message it returns).
     */
    command: z.enum(['symbols', 'report', 'check', 'process']).default('symbols'),
    /** spamd `User` header: whose preferences spamd applies (spamd without -x/--virtual-config-dir ignores it). */
    user: z
      .string()
      .regex(/^[^\s\r\n]+$/, 'expected a user name without spaces')
      .optional(),
    /** Messages larger than this are not sent to spamd (traced as not scanned), as spamc's --max-size. */
    max_size: size().prefault('500K'),
    /** At or above: X-Spam-Flag: YES and "Yes" in X-Spam-Status. Absent: spamd's own verdict (its required_score). */
    tag_score: score.optional(),
    /** At or above: delivered into `quarantine_folder`. */
    quarantine_score: score.optional(),
    quarantine_folder: z.string().min(1).default('Junk'),
    /** At or above: refused at DATA (550 5.7.1 reject_text). */
    reject_score: score.optional(),
    /** `{score}` is filled in. */
    reject_text: z
      .string()
      .min(1)
      .refine((s) => !/[\r\n]/.test(s), 'must be one line')
      .default('Message refused as spam'),
    /** Add X-Spam-Status, X-Spam-Score, X-Spam-Flag (and X-Spam-Report with command report). */
    add_headers: z.boolean().default(true),
    /** The score Sieve spamtest scales against (RFC 5235 §3.2); default: the global sieve.spamtest.max. */
    spamtest_max: z.number().positive().optional(),
    /** Scan mail from authenticated users and trusted networks too (default: no). */
    scan_relaying: z.boolean().default(false),
  })
  .strict()
  .superRefine((c, ctx) => {
    const p = endpointProblem(c);
    if (p) ctx.addIssue({ code: 'custom', message: p, path: ['socket'] });
    if (c.reject_score !== undefined && c.quarantine_score !== undefined && c.quarantine_score > c.reject_score)
      ctx.addIssue({ code: 'custom', message: 'quarantine_score must not be above reject_score', path: ['quarantine_score'] });
    if (c.reject_score !== undefined && c.tag_score !== undefined && c.tag_score > c.reject_score)
      ctx.addIssue({ code: 'custom', message: 'tag_score must not be above reject_score', path: ['tag_score'] });
  });

export type SpamassassinConfig = z.infer<typeof configSchema>;
