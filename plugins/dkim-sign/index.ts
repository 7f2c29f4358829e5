// dkim-sign: adds a DKIM-Signature (RFC 6376) to mail from authenticated users and trusted
// networks (sign: relaying; or all mail), at the queue stage, so it signs the message as it will
// be queued, after every header edit of the data stage. The signing domain is the domain of the
// RFC 5322 From address (what DMARC aligns with, RFC 7489 §3.1); its key comes from `keys`
// (loaded and checked at start) or, failing that, from the store hash `store_key`
// (field = domain, value = JSON {"selector", "private_key"}), read per message.
//
// Keys: RSA (rsa-sha256; at least 1024 bits, RFC 8301 §3.2; 2048 recommended) or Ed25519
// (ed25519-sha256, RFC 8463), PEM. A bad key file or key fails init (the daemon does not start);
// a bad store key is logged and the message goes unsigned. No key for the domain: unsigned, and
// the trace says so. Signing is done by mailauth.
// Metrics (besides the host's per-hook ones): postern_dkimsign_signatures_total{domain,algorithm},
// the signatures made.
// Config keys read: keys[].domain/selector/private_key_file/private_key, store_key,
// canonicalization, headers, sign; global baseDir.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { dkimSign } from 'mailauth';
import { definePlugin, type HookContext, type MessageAccess } from '../../src/pipeline/plugin.js';
import { next, type Verdict } from '../../src/pipeline/verdict.js';
import { createMessage } from '../../src/pipeline/message.js';
import { logEvent } from '../../src/log/logger.js';
import { pluginCounter } from '../../src/pipeline/metrics.js';
import { configSchema, type DkimSignConfig } from './config.js';

export interface SigningKey {
  domain: string;
  selector: string;
  pem: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
}

interface State {
  keys: Map<string, SigningKey>;
}

type Ctx = HookContext<DkimSignConfig, State>;

// Domains are those we hold keys for (config or store): a bounded label.
const signatures = pluginCounter('postern_dkimsign_signatures_total', 'DKIM signatures made, by signing domain and algorithm', ['domain', 'algorithm']);

export default definePlugin({
  name: 'dkim-sign',
  config: configSchema,
  init({ config, global }): State {
    const keys = new Map<string, SigningKey>();
    for (const [i, k] of config.keys.entries()) {
      let pem: string;
      if (k.private_key_file) {
        const file = resolve(global.baseDir, k.private_key_file);
        try {
          pem = readFileSync(file, 'utf8');
        } catch (e) {
          throw new Error(`keys.${i}: cannot read ${file}: ${(e as Error).message}`);
        }
      } else pem = k.private_key!;
      try {
        keys.set(k.domain, checkKey(k.domain, k.selector, pem));
      } catch (e) {
        throw new Error(`keys.${i} (${k.domain}): ${(e as Error).message}`);
      }
    }
    return { keys };
  },
  hooks: {
    queue: sign,
  },
});

/** Parses a PEM private key and names its algorithm; throws with the reason a key is unusable. */
export function checkKey(domain: string, selector: string, pem: string): SigningKey {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new Error(`not a PEM private key: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType === 'ed25519') return { domain, selector, pem, algorithm: 'ed25519-sha256' };
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 1024) throw new Error(`RSA key of ${bits} bits: at least 1024 are required (RFC 8301 §3.2)`);
    return { domain, selector, pem: key.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'rsa-sha256' };
  }
  throw new Error(`unsupported key type ${key.asymmetricKeyType ?? '?'}: use RSA or Ed25519`);
}

async function sign(ctx: Ctx): Promise<Verdict> {
  const c = ctx.config;
  if (!ctx.message) return next();
  if (c.sign === 'relaying' && !ctx.session.relaying && !ctx.session.authUser) return next();
  const domain = fromDomain(ctx.message.headers.get('From')[0] ?? '');
  if (!domain) {
    ctx.trace?.({ verdict: 'next', detail: 'not signed: no From domain' });
    return next();
  }
  const key = ctx.state.keys.get(domain) ?? (await storeKey(ctx, domain));
  if (!key) {
    ctx.trace?.({ verdict: 'next', detail: `not signed: no key for ${domain}` });
    return next();
  }
  const message = rendered(ctx.message) ?? (await ctx.message.raw());
  const options = {
    canonicalization: c.canonicalization,
    algorithm: key.algorithm,
    headerList: c.headers,
    signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.pem, algorithm: key.algorithm }],
  };
  // mailauth's typings want top-level signingDomain/selector/privateKey; its signer reads signatureData.
  const res = await dkimSign(message, options as unknown as Parameters<typeof dkimSign>[1]);
  if (res.errors.length) throw new Error(`DKIM signing for ${domain} failed: ${res.errors.map((e) => e.message).join('; ')}`);
  for (const [name, value] of createMessage(Buffer.from(`${res.signatures}\r\n`)).headers.list().reverse()) ctx.message.headers.add(name, value);
  signatures.inc(ctx, { domain, algorithm: key.algorithm });
  logEvent(ctx.log, 'info', 'plugin.dkimsign.signed', { domain, selector: key.selector, algorithm: key.algorithm, queueId: ctx.tx?.id }, `signed for ${domain}`);
  ctx.trace?.({ verdict: 'next', detail: `signed: d=${domain} s=${key.selector} a=${key.algorithm}` });
  return next();
}

async function storeKey(ctx: Ctx, domain: string): Promise<SigningKey | null> {
  if (!ctx.config.store_key) return null;
  const v = await ctx.store.hget(ctx.config.store_key, domain);
  if (v === null) return null;
  try {
    const o = JSON.parse(v) as { selector?: unknown; private_key?: unknown };
    if (typeof o.selector !== 'string' || typeof o.private_key !== 'string') throw new Error('expected {"selector", "private_key"}');
    return checkKey(domain, o.selector, o.private_key);
  } catch (e) {
    ctx.trace?.({ verdict: 'error', detail: `store key for ${domain} unusable: ${(e as Error).message}` });
    logEvent(ctx.log, 'warn', 'plugin.error', { domain, store_key: ctx.config.store_key, err: (e as Error).message }, `DKIM key for ${domain} in the store is unusable; not signed`);
    return null;
  }
}

/** The message with the header edits made so far, when the host's message can render them. */
function rendered(m: MessageAccess): Buffer | null {
  const r = (m as MessageAccess & { render?: () => Buffer }).render;
  return typeof r === 'function' ? r.call(m) : null;
}

/** The domain of the (first) From address: "Name <a@Example.org>" → "example.org". */
export function fromDomain(from: string): string | null {
  const angle = /<[^>]*@([^>\s]+)>/.exec(from);
  const bare = angle ?? /@([a-z0-9.-]+)/i.exec(from);
  return bare ? bare[1]!.toLowerCase().replace(/\.$/, '') : null;
}
