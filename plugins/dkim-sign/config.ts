// Options of the dkim-sign plugin (plugins: [ { dkim-sign: { keys: [ { domain: example.org,
// selector: s1, private_key_file: keys/example.org.pem } ] } } ]).
import { z } from 'zod';

const domain = z
  .string()
  .regex(/^(?!-)[a-z0-9-]+(\.[a-z0-9-]+)+\.?$/i, 'expected a domain such as example.org')
  .transform((d) => d.toLowerCase().replace(/\.$/, ''));

export const keySchema = z
  .object({
    domain,
    /** RFC 6376 §3.1 selector: the key is published at <selector>._domainkey.<domain>. */
    selector: z.string().regex(/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/i, 'expected a selector such as s2026'),
    /** PEM file (PKCS#8 or PKCS#1 RSA, PKCS#8 Ed25519), relative to the config file's folder. */
    private_key_file: z.string().min(1).optional(),
    /** The PEM text itself, instead of a file. */
    private_key: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((k, ctx) => {
    if (!k.private_key_file === !k.private_key) ctx.addIssue({ code: 'custom', message: 'give exactly one of private_key_file and private_key', path: ['private_key_file'] });
  });

export const configSchema = z
  .object({
    keys: z.array(keySchema).default([]),
    /**
     * Store hash of more keys, field = domain, value = JSON {"selector", "private_key"} (PEM);
     * read per message, so keys added at run time sign the next message. "" turns it off.
     */
    store_key: z.string().default('dkim:keys'),
    /**
     * Header/body canonicalization (RFC 6376 §3.4). The header part is relaxed only: the
     * signature field is written through the header editor, which may fold it anew.
     */
    canonicalization: z.enum(['relaxed/relaxed', 'relaxed/simple']).default('relaxed/relaxed'),
    /** Header fields signed when present (RFC 6376 §5.4.1); From is always signed. */
    headers: z
      .array(z.string().regex(/^[!-9;-~]+$/, 'expected a header field name'))
      .default(['From', 'Reply-To', 'Subject', 'Date', 'To', 'Cc', 'Message-ID', 'In-Reply-To', 'References', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding', 'List-Id', 'List-Unsubscribe']),
    /** Which mail is signed: from authenticated users and trusted networks (relaying), or all. */
    sign: z.enum(['relaying', 'all']).default('relaying'),
  })
  .strict();

export type DkimSignConfig = z.infer<typeof configSchema>;
