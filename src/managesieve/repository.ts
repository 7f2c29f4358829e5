// The per-user Sieve script repository, kept in the Store (RFC 5804: a user owns a set of
// named scripts, at most one of them active). ManageSieve writes it; delivery reads the active
// script with getActiveScript().
//
// Keys:
//   sieve:scripts:<user>   hash: script name → script text (UTF-8)
//   sieve:active:<user>    string: the active script's name; absent when none is active
// <user> is the canonical address Directory.authenticate returns.
// Every change publishes { op, user, name?, to? } (JSON) on the "sieve" channel, so a reader that
// caches compiled scripts drops them (op: put | delete | rename | activate | deactivate).
//
// Quotas (limits.ts, RFC 5804 §1.3 QUOTA/MAXSCRIPTS and QUOTA/MAXSIZE) and name rules (§1.6) are
// checked here, for every writer. The repository does not compile scripts: callers do that first
// (PUTSCRIPT refuses an invalid script before anything is stored, §2.6).
//
// Concurrency: the Store has no transactions. Two sessions of one user racing on the same names
// can overshoot the script quota by one or leave the active pointer naming a script another
// session deleted a moment earlier; getActiveScript() treats a dangling pointer as "no script".
import type { Store } from '../store/store.js';
import { MAX_SCRIPT_NAME, MAX_SCRIPT_SIZE, MAX_SCRIPTS_PER_USER } from './limits.js';

export const SIEVE_CHANNEL = 'sieve';

const scriptsKey = (user: string) => `sieve:scripts:${user}`;
const activeKey = (user: string) => `sieve:active:${user}`;

export type ScriptErrorCode = 'nonexistent' | 'already-exists' | 'active' | 'quota-size' | 'quota-count' | 'invalid-name';

/** A refusal the client caused; ManageSieve maps `code` to a response code (RFC 5804 §1.3). */
export class ScriptError extends Error {
  constructor(
    readonly code: ScriptErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ScriptError';
  }
}

export interface ScriptEntry {
  name: string;
  active: boolean;
}

/**
 * RFC 5804 §1.6: names are UTF-8 without control characters (U+0000–U+001F, U+007F–U+009F) or
 * the line and paragraph separators (U+2028, U+2029). We also refuse "" (it means "no script" to
 * SETACTIVE, §2.8) and names longer than MAX_SCRIPT_NAME octets. Returns the reason, or null.
 */
export function invalidScriptName(name: string): string | null {
  if (name.length === 0) return 'script name is empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_SCRIPT_NAME) return `script name is longer than ${MAX_SCRIPT_NAME} octets`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) return 'script name contains a control character';
  if (/[\ud800-\udfff]/.test(name.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ''))) return 'script name is not valid UTF-8';
  return null;
}

export class ScriptRepository {
  constructor(private readonly store: Store) {}

  async list(user: string): Promise<ScriptEntry[]> {
    const [all, active] = await Promise.all([this.store.hgetall(scriptsKey(user)), this.store.get(activeKey(user))]);
    return Object.keys(all)
      .sort()
      .map((name) => ({ name, active: name === active }));
  }

  async get(user: string, name: string): Promise<string | null> {
    return this.store.hget(scriptsKey(user), name);
  }

  async activeName(user: string): Promise<string | null> {
    return this.store.get(activeKey(user));
  }

  /** RFC 5804 §2.5 HAVESPACE: throws ScriptError quota-size / quota-count / invalid-name when a
   *  PUTSCRIPT of `size` octets under `name` would be refused. */
  async checkSpace(user: string, name: string, size: number): Promise<void> {
    const bad = invalidScriptName(name);
    if (bad) throw new ScriptError('invalid-name', bad);
    if (size > MAX_SCRIPT_SIZE) throw new ScriptError('quota-size', `script is larger than ${MAX_SCRIPT_SIZE} octets`);
    const all = await this.store.hgetall(scriptsKey(user));
    if (!(name in all) && Object.keys(all).length >= MAX_SCRIPTS_PER_USER) {
      throw new ScriptError('quota-count', `at most ${MAX_SCRIPTS_PER_USER} scripts per user`);
    }
  }

  /** Stores (or replaces) a script; replacing the active one keeps it active (RFC 5804 §2.6). */
  async put(user: string, name: string, script: string): Promise<void> {
    await this.checkSpace(user, name, Buffer.byteLength(script, 'utf8'));
    await this.store.hset(scriptsKey(user), name, script);
    await this.changed('put', user, { name });
  }

  /** RFC 5804 §2.8: "" deactivates; otherwise the script must exist (nonexistent). */
  async setActive(user: string, name: string): Promise<void> {
    if (name === '') {
      await this.store.del(activeKey(user));
      await this.changed('deactivate', user, {});
      return;
    }
    if ((await this.get(user, name)) === null) throw new ScriptError('nonexistent', 'there is no script by that name');
    await this.store.set(activeKey(user), name);
    await this.changed('activate', user, { name });
  }

  /** RFC 5804 §2.10: the active script cannot be deleted (active); a missing one is nonexistent. */
  async delete(user: string, name: string): Promise<void> {
    if ((await this.activeName(user)) === name) throw new ScriptError('active', 'the script is active; deactivate it first');
    if ((await this.store.hdel(scriptsKey(user), name)) === 0) throw new ScriptError('nonexistent', 'there is no script by that name');
    await this.changed('delete', user, { name });
  }

  /** RFC 5804 §2.11: the new name must be free (already-exists); the active script stays active
   *  under its new name. The copy is written before the old name goes, so a crash in between
   *  leaves two copies rather than none. */
  async rename(user: string, from: string, to: string): Promise<void> {
    const bad = invalidScriptName(to);
    if (bad) throw new ScriptError('invalid-name', bad);
    const script = await this.get(user, from);
    if (script === null) throw new ScriptError('nonexistent', 'there is no script by that name');
    if (from === to) return;
    if ((await this.get(user, to)) !== null) throw new ScriptError('already-exists', 'a script by the new name exists');
    await this.store.hset(scriptsKey(user), to, script);
    if ((await this.activeName(user)) === from) await this.store.set(activeKey(user), to);
    await this.store.hdel(scriptsKey(user), from);
    await this.changed('rename', user, { name: from, to });
  }

  private async changed(op: string, user: string, extra: { name?: string; to?: string }): Promise<void> {
    await this.store.publish(SIEVE_CHANNEL, JSON.stringify({ op, user, ...extra }));
  }
}

/**
 * The user's active script, for delivery (RFC 5804 §2.8: the one script run on the user's mail).
 * Null when none is active, or when the pointer names a script that is gone (see Concurrency).
 */
export async function getActiveScript(store: Store, user: string): Promise<{ name: string; script: string } | null> {
  const name = await store.get(activeKey(user));
  if (name === null) return null;
  const script = await store.hget(scriptsKey(user), name);
  return script === null ? null : { name, script };
}
