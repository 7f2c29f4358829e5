// Polling helpers for end-to-end tests: delivery happens after the 250, so tests wait for it.
import { join } from 'node:path';
import type { RunningDaemon } from './daemon.js';
import { pythonJson, READ_MAILDIR } from './python.js';

export interface StoredMessage {
  key: string;
  bytes: string;
  flags: string;
  subdir: string;
}

/** Calls `fn` until `ok` holds or `ms` pass; returns the last value either way. */
export async function waitFor<T>(fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    v = await fn();
  }
  return v;
}

/** Resolves once `ok` holds; throws when it still does not after `ms`. */
export async function until(ok: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The messages of `user@example.test` (or one of its Maildir++ folders), read by Python; [] if none yet. */
export async function readMaildir(d: RunningDaemon, user: string, folder = ''): Promise<StoredMessage[]> {
  return pythonJson<StoredMessage[]>(READ_MAILDIR, [join(d.dataDir, 'mail', 'example.test', user), folder]).catch(() => []);
}
