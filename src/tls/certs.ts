// The server certificate for STARTTLS and the implicit-TLS listeners (smtps, imaps, pop3s).
// Config keys: `tls.cert` and `tls.key` (PEM files, already absolute after config loading),
// `hostname` and `data_dir`.
//
// With `tls` given, those files are read and checked (readable, PEM, key matches certificate);
// any fault is a ConfigError naming the key, so `check-config` and start say the same thing.
// Without it, a self-signed pair is made once under data_dir/tls/ (self-signed.key, mode 0600;
// self-signed.crt) with CN and subjectAltName = hostname, and reused on later starts. It is made
// again only when it no longer fits: expired, issued for another hostname, or a key that does not
// match the certificate (an interrupted write).
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { generate } from 'selfsigned';
import type { Config } from '../config/load.js';
import { ConfigError } from '../config/errors.js';

export interface TlsMaterial {
  /** PEM private key. */
  key: string;
  /** PEM certificate chain. */
  cert: string;
  /** True when this is the generated self-signed pair. */
  selfSigned: boolean;
  /** Where they were read from. */
  keyFile: string;
  certFile: string;
}

/** Self-signed certificates last this long; a later start after expiry makes a new one. */
const SELF_SIGNED_DAYS = 825;

export function selfSignedPaths(dataDir: string): { dir: string; key: string; cert: string } {
  const dir = join(dataDir, 'tls');
  return { dir, key: join(dir, 'self-signed.key'), cert: join(dir, 'self-signed.crt') };
}

export async function loadOrCreateTls(config: Pick<Config, 'tls' | 'data_dir' | 'hostname'>, now = new Date()): Promise<TlsMaterial> {
  if (config.tls) return readConfiguredTls(config.tls);
  const paths = selfSignedPaths(config.data_dir);
  const existing = await readPair(paths.key, paths.cert);
  if (existing && fits(existing.key, existing.cert, config.hostname, now)) {
    return { ...existing, selfSigned: true, keyFile: paths.key, certFile: paths.cert };
  }
  const made = await makeSelfSigned(config.hostname, now);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  // Key first, each through a temporary file and a rename, so a reader never sees half a file;
  // a crash between the two renames leaves a mismatched pair, which `fits` refuses next time.
  await writeAtomic(paths.key, made.key, 0o600);
  await writeAtomic(paths.cert, made.cert, 0o644);
  return { ...made, selfSigned: true, keyFile: paths.key, certFile: paths.cert };
}

/** Reads and checks the configured pair; throws ConfigError with the offending key's path. */
export async function readConfiguredTls(tls: { cert: string; key: string }): Promise<TlsMaterial> {
  const read = async (file: string, key: 'tls.cert' | 'tls.key') => {
    try {
      return await readFile(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EISDIR' ? 'is a directory' : err.message;
      throw new ConfigError([{ path: key, message: `cannot read ${file}: ${why}` }]);
    }
  };
  const [cert, key] = [await read(tls.cert, 'tls.cert'), await read(tls.key, 'tls.key')];
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigError([{ path: 'tls.cert', message: `${tls.cert} holds no PEM certificate` }]);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) {
    throw new ConfigError([{ path: 'tls.key', message: `${tls.key} holds no PEM private key` }]);
  }
  try {
    createSecureContext({ key, cert });
  } catch (e) {
    // OpenSSL's words, e.g. "key values mismatch".
    throw new ConfigError([{ path: 'tls', message: `${tls.cert} and ${tls.key} do not make a usable pair: ${(e as Error).message}` }]);
  }
  return { key, cert, selfSigned: false, keyFile: tls.key, certFile: tls.cert };
}

async function readPair(keyFile: string, certFile: string): Promise<{ key: string; cert: string } | null> {
  try {
    return { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8') };
  } catch {
    return null;
  }
}

/** Still valid at `now`, issued for `hostname`, and the key belongs to the certificate. */
function fits(key: string, cert: string, hostname: string, now: Date): boolean {
  try {
    const x = new X509Certificate(cert);
    if (new Date(x.validTo) <= now || new Date(x.validFrom) > now) return false;
    const matches = isIP(hostname) ? x.checkIP(hostname) : x.checkHost(hostname, { subject: 'always' });
    if (!matches) return false;
    return x.checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}

async function makeSelfSigned(hostname: string, now: Date): Promise<{ key: string; cert: string }> {
  const notAfter = new Date(now.getTime() + SELF_SIGNED_DAYS * 86_400_000);
  const san = isIP(hostname) ? { type: 7 as const, ip: hostname } : { type: 2 as const, value: hostname };
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    // ECDSA P-256: made in milliseconds (RSA 2048 takes most of a second, on every fresh
    // data_dir in tests) and accepted by every current TLS stack.
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    // A minute of slack for clocks that differ a little.
    notBeforeDate: new Date(now.getTime() - 60_000),
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [san] },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode); // the umask may have taken bits away; make the mode exact
  await rename(tmp, file);
}
