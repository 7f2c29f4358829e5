// Options of the clamav plugin (plugins: [ { clamav: { host: 127.0.0.1, port: 3310 } } ]).
import { z } from 'zod';
import { size } from '../../src/config/units.js';
import { endpointFields, endpointProblem } from '../../src/pipeline/scanner/connection.js';

const oneLine = (what: string) =>
  z
    .string()
    .min(1)
    .refine((s) => !/[\r\n]/.test(s), `${what} must be one line`);

export const configSchema = z
  .object({
    ...endpointFields,
    /**
     * The most octets sent to clamd; keep it at or below clamd's StreamMaxLength (default 25M),
     * past which clamd stops reading and answers "size limit exceeded".
     */
    max_size: size().prefault('25M'),
    /** A message larger than max_size: not scanned (skip), its first max_size octets scanned (truncate), or refused (reject, 552 5.3.4). */
    oversize: z.enum(['skip', 'truncate', 'reject']).default('skip'),
    /** INSTREAM chunk size in octets. */
    chunk_size: size().prefault('64K'),
    /** Infected: refuse at DATA (reject) or deliver into `quarantine_folder` (quarantine). */
    action: z.enum(['reject', 'quarantine']).default('reject'),
    quarantine_folder: z.string().min(1).default('Quarantine'),
    reject_code: z.number().int().min(550).max(554).default(554),
    reject_enhanced: z
      .string()
      .regex(/^5\.\d{1,3}\.\d{1,3}$/, 'expected a 5.x.y enhanced status code')
      .default('5.7.1'),
    /** `{signature}` is filled in. */
    reject_text: oneLine('reject_text').default('Message refused: virus found ({signature})'),
    /** Header naming the outcome (clean / infected / not scanned), read by Sieve virustest; "" for none. */
    status_header: z.string().default('X-Virus-Status'),
    /** Scan mail from authenticated users and trusted networks too (default: yes). */
    scan_relaying: z.boolean().default(true),
  })
  .strict()
  .superRefine((c, ctx) => {
    const p = endpointProblem(c);
    if (p) ctx.addIssue({ code: 'custom', message: p, path: ['socket'] });
    if (c.chunk_size < 1 || c.chunk_size > 16 * 1024 * 1024) ctx.addIssue({ code: 'custom', message: 'expected a chunk size between 1 octet and 16M', path: ['chunk_size'] });
    if (c.max_size < 1) ctx.addIssue({ code: 'custom', message: 'expected a size of at least 1 octet', path: ['max_size'] });
  });

export type ClamavConfig = z.infer<typeof configSchema>;
