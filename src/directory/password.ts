// Password hashing for directory users: scrypt (RFC 7914) from node's crypto, stored as
// "scrypt$N$r$p$<salt, base64>$<hash, base64>" so the cost can be raised later without breaking
// old hashes (each hash carries its own parameters). Verification compares in constant time, and
// callers without a user verify against a dummy hash, so timing does not reveal whether a user
// exists. Passwords are hashed as their UTF-8 bytes, as given (no SASLprep normalisation).
// Config keys read: none.
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  r: number;
  p: number;
}

/** 2^15, 8, 1: about 32 MiB and some tens of ms per hash (OWASP's scrypt minimum is 2^17/8/1 at 128 MiB; this trades some of that for AUTH throughput). */
export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 1 };

const SALT_BYTES = 16;
const KEY_BYTES = 32;

// Bounds on parameters read back from the store: a hostile or corrupt entry must not make one
// login cost gigabytes or minutes.
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;

function scrypt(password: string | Buffer, salt: Buffer, keylen: number, params: ScryptParams): Promise<Buffer> {
  // node refuses when 128*N*r exceeds maxmem (32 MiB by default), which 2^15/8 just reaches.
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  checkParams(params);
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(Buffer.from(password, 'utf8'), salt, KEY_BYTES, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export interface ParsedHash extends ScryptParams {
  salt: Buffer;
  key: Buffer;
}

/** Parses an encoded hash; null when it is not one we can verify. */
export function parseHash(encoded: string): ParsedHash | null {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = parts.slice(1, 4).map((x) => (/^\d{1,8}$/.test(x!) ? Number(x) : NaN)) as [number, number, number];
  const b64 = /^[A-Za-z0-9+/]+={0,2}$/;
  if (!b64.test(parts[4]!) || !b64.test(parts[5]!)) return null;
  const salt = Buffer.from(parts[4]!, 'base64');
  const key = Buffer.from(parts[5]!, 'base64');
  try {
    checkParams({ N, r, p });
  } catch {
    return null;
  }
  if (salt.length < 8 || key.length < 16 || key.length > 128) return null;
  return { N, r, p, salt, key };
}

/**
 * True when `password` matches `encoded`. An unparsable hash verifies as false after the same
 * work as a real one (against the dummy), so a broken entry is not a timing oracle either.
 */
export async function verifyPassword(password: string, encoded: string, dummyParams: ScryptParams = DEFAULT_SCRYPT): Promise<boolean> {
  const parsed = parseHash(encoded);
  if (!parsed) {
    await burnDummy(password, dummyParams);
    return false;
  }
  const key = await scrypt(Buffer.from(password, 'utf8'), parsed.salt, parsed.key.length, parsed);
  return timingSafeEqual(key, parsed.key);
}

const dummies = new Map<string, Promise<string>>();

/** The hash the dummy check verifies against: made once per parameter set, of a random password. */
export function dummyHash(params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const id = `${params.N}$${params.r}$${params.p}`;
  let dummy = dummies.get(id);
  if (!dummy) dummies.set(id, (dummy = hashPassword(randomBytes(16).toString('hex'), params)));
  return dummy;
}

/**
 * Does the work of one verification and always fails: the path taken for an unknown user, so it
 * costs what a known user's wrong password costs (with the parameters new hashes get).
 */
export async function burnDummy(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<false> {
  const parsed = parseHash(await dummyHash(params))!;
  const key = await scrypt(Buffer.from(password, 'utf8'), parsed.salt, parsed.key.length, parsed);
  timingSafeEqual(key, parsed.key);
  return false;
}

function checkParams({ N, r, p }: ScryptParams): void {
  const pow2 = Number.isInteger(N) && N > 1 && (N & (N - 1)) === 0;
  if (!pow2 || N > MAX_N) throw new RangeError(`scrypt N must be a power of two between 2 and ${MAX_N}`);
  if (!Number.isInteger(r) || r < 1 || r > MAX_R) throw new RangeError(`scrypt r must be 1..${MAX_R}`);
  if (!Number.isInteger(p) || p < 1 || p > MAX_P) throw new RangeError(`scrypt p must be 1..${MAX_P}`);
}
