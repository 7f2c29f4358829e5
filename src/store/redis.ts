// The Redis Store driver: state shared by every node of a deployment through one Redis server
// (ioredis). Semantics are store.ts's, which are Redis's own: GET, SET [PX] [NX], DEL, INCRBY
// with a TTL set on creation (one Lua script, so creation and expiry are atomic), PTTL, HGET,
// HSET, HDEL, HGETALL, SCAN MATCH prefix*, PUBLISH/SUBSCRIBE.
//
// Keys and channels: every key and every channel name is written with `store.prefix` in front
// ("postern:dir:user:alice@example.test", channel "postern:directory"), so several deployments,
// or test runs, can share a server. Callers never see the prefix.
//
// Connections: one for commands, one (made at the first subscribe) for SUBSCRIBE, since a
// subscribed Redis connection takes no other commands. A publish waits for this process's
// pending SUBSCRIBEs, so a subscriber here never misses an event published after it subscribed.
//
// Outage (Redis down, restarting, unreachable):
//   - Commands are never queued while disconnected: they fail at once with StoreUnavailableError
//     (errors.ts), as do commands in flight when the connection drops (never resent: an INCR
//     must not count twice) and commands unanswered after `store.command_timeout`. Only before the
//     very first connection attempt has finished do commands wait for it.
//   - Reads of the keys in `store.last_known` (directory, relay policy, rules, tokens) are then
//     answered from their last known values (last-known.ts), so a node keeps accepting mail for
//     known users, with the last rules and policies. Writes, counters (greylist, rate limits,
//     auth failures) and caches fail; each plugin's `on_error` decides what that means for the
//     client (tempfail, 451 4.3.0, by default).
//   - `health()` turns unhealthy when the connection drops and healthy again once both
//     connections are back and every channel is subscribed again; `store.unavailable` and
//     `store.recovered` are logged once per outage.
//   - Reconnection backs off (`reconnectDelay`: 100 ms doubling to 2 s, plus up to 10 % jitter).
//     After a reconnect the last known values are loaded again in full, and every subscriber gets
//     `{"resync":true}` on its channel (events published meanwhile were lost), as the embedded
//     driver does after missing a journal: subscribers drop their caches on any event.
//
// Format. The key `<prefix>store:format` names the layout of keys and values the deployment's
// data is in (REDIS_FORMAT); a node sets it when it is absent. A node reads it on each new
// connection, before any command of its own goes through, and again every FORMAT_RECHECK_MS.
// Any other value (a newer build's, or one this build cannot make sense of) and the node stops
// using the store, as the embedded driver does with newer files: `store.format_newer` is logged
// once, subscribers are told to resync, `health()` turns unhealthy for good, and every call fails
// with StoreFormatError (451 4.3.0 to a session), last known values included: applying or
// serving part of a layout it does not know could lose what the newer build wrote. `ready()`
// rejects with it, so `postern start` stops at once. A build that changes the layout sets the
// key first, then waits longer than FORMAT_RECHECK_MS before writing in the new layout.
//
// Config keys read: `store.url`, `store.prefix`, `store.command_timeout`, `store.last_known`.
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log/logger.js';
import { silentLogger } from '../log/logger.js';
import { StoreFormatError, StoreUnavailableError } from './errors.js';
import { DEFAULT_LAST_KNOWN, DEFAULT_MAX_KEYS, LastKnown, type Lookup } from './last-known.js';
import { Subscribers } from './subscribers.js';
import type { ChangeEvent, SetOptions, Store, StoreHealth } from './store.js';

export interface RedisStoreOptions {
  url: string;
  /** Put before every key and channel name. */
  prefix: string;
  log?: Logger;
  /** A command unanswered after this long fails as unavailable. Default 2000 ms. */
  commandTimeoutMs?: number;
  /** Giving up on one connection attempt. Default 3000 ms. */
  connectTimeoutMs?: number;
  /** `store.last_known`: exact keys, or prefixes ending in ':'. Default DEFAULT_LAST_KNOWN. */
  lastKnown?: string[];
  lastKnownMaxKeys?: number;
  /** After change events, the last known values are reloaded at most this often. Default 10 s. */
  refreshMs?: number;
  /** How often the format key is read again while connected. Default FORMAT_RECHECK_MS. */
  formatRecheckMs?: number;
}

/** Milliseconds before reconnect attempt `n` (1, 2, …): 100 ms doubling up to 2 s, +0–10 %. */
export function reconnectDelay(n: number, random: () => number = Math.random): number {
  const base = Math.min(100 * 2 ** Math.max(0, n - 1), 2000);
  return Math.round(base * (1 + random() * 0.1));
}

/** The layout of keys and values this build reads and writes (see the header). */
export const REDIS_FORMAT = 1;
/** Where the format is kept, under the prefix; no other key starts with "store:". */
export const FORMAT_KEY = 'store:format';
/** How often a connected node reads the format again (a newer node may have raised it). */
export const FORMAT_RECHECK_MS = 5000;

// The stored format; REDIS_FORMAT (ARGV[1]) is set first when there is none.
const FORMAT_LUA = `
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`;

// INCRBY that sets the expiry only when it created the key: ARGV[1] = by, ARGV[2] = ttl in ms.
const INCR_TTL_LUA = `
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v`;

// Type and value of each key, in one atomic step: {type, value} per key (value absent unless
// string or hash).
const LOAD_LUA = `
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t == 'string' then out[i] = {t, redis.call('GET', k)}
  elseif t == 'hash' then out[i] = {t, redis.call('HGETALL', k)}
  else out[i] = {t} end
end
return out`;

interface Scripts {
  posternIncrTtl(key: string, by: number, ttlMs: number): Promise<number>;
  posternLoad(n: number, ...keys: string[]): Promise<[string, (string | string[])?][]>;
  posternFormat(key: string, mine: string): Promise<string>;
}

const SCAN_COUNT = 500;

export class RedisStore implements Store {
  readonly prefix: string;
  private readonly log: Logger;
  private readonly main: Redis & Scripts;
  private sub: Redis | null = null;
  private readonly opts: Required<Pick<RedisStoreOptions, 'url' | 'commandTimeoutMs' | 'connectTimeoutMs' | 'refreshMs'>>;
  private readonly lastKnown: LastKnown;
  private readonly subscribers = new Subscribers();
  /** Channels subscribed on the server (or being subscribed). */
  private readonly serverChannels = new Set<string>();
  private readonly pendingSubs = new Set<Promise<unknown>>();

  private closed = false;
  private closing: Promise<void> | null = null;
  /** The first connection attempt has ended (ready or failed): from then on, fail fast. */
  private settled = false;
  private readonly firstAttempt: Promise<void>;
  private healthy = false;
  private everHealthy = false;
  /** The last command timed out on an open connection. */
  private stalled = false;
  private healthSince = Date.now();
  private lastError: string | undefined;
  /** True once the subscriber connection has been ready (a later ready is a reconnect). */
  private subWasReady = false;
  private subReady = false;
  /** Publishes waiting for the subscriber connection's first SUBSCRIBE (or its failure). */
  private subWaiters: (() => void)[] = [];
  private refreshTimer: NodeJS.Timeout | null = null;
  private lastRefresh = 0;
  private warming: Promise<void> | null = null;
  /** The data is in another format: nothing is read or written any more (see the header). */
  private newer: StoreFormatError | null = null;
  /** The format was read on the current main connection (false again when it closes). */
  private formatKnown = false;
  private formatCheck: Promise<void> | null = null;
  private formatTimer: NodeJS.Timeout | null = null;

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.prefix;
    this.log = opts.log ?? silentLogger();
    this.opts = {
      url: opts.url,
      commandTimeoutMs: opts.commandTimeoutMs ?? 2000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 3000,
      refreshMs: opts.refreshMs ?? 10_000,
    };
    this.lastKnown = new LastKnown(opts.lastKnown ?? DEFAULT_LAST_KNOWN, opts.lastKnownMaxKeys ?? DEFAULT_MAX_KEYS, () =>
      this.log.warn({ evt: 'store.error', max: opts.lastKnownMaxKeys ?? DEFAULT_MAX_KEYS }, 'redis store: too many keys to remember for an outage; newer ones are not kept'),
    );

    this.main = new Redis(this.opts.url, this.connectionOptions()) as Redis & Scripts;
    this.main.defineCommand('posternIncrTtl', { numberOfKeys: 1, lua: INCR_TTL_LUA });
    this.main.defineCommand('posternLoad', { lua: LOAD_LUA });
    this.main.defineCommand('posternFormat', { numberOfKeys: 1, lua: FORMAT_LUA });
    this.firstAttempt = new Promise<void>((resolve) => {
      const done = () => {
        this.settled = true;
        resolve();
      };
      this.main.once('ready', done);
      this.main.once('close', () => {
        if (!this.settled && !this.closed) this.log.warn({ evt: 'store.unavailable', err: this.lastError }, 'redis store unreachable at start; serving nothing until it answers');
        done();
      });
      this.main.once('end', done);
    });
    this.main.on('error', (err: Error) => (this.lastError = err.message));
    // Healthy, and the last known values loaded, only once the format is known to be ours
    // (checkFormat); a check that fails for now is made again by the next command or the timer.
    this.main.on('ready', () => void this.checkFormat().catch(() => undefined));
    this.main.on('close', () => {
      this.formatKnown = false;
      this.connectionClosed();
    });
    this.formatTimer = setInterval(() => {
      if (this.main.status === 'ready' && !this.newer) this.checkFormat().catch(() => undefined);
    }, opts.formatRecheckMs ?? FORMAT_RECHECK_MS);
    this.formatTimer.unref();
  }

  /**
   * Resolves once the first connection attempt has ended, reachable or not (an unreachable store
   * is served as an outage); rejects with StoreFormatError when the data is in another format.
   */
  async ready(): Promise<void> {
    await this.firstAttempt;
    if (this.main.status === 'ready') await this.checkFormat().catch((e: unknown) => {
      if (e instanceof StoreFormatError) throw e;
    });
    if (this.newer) throw this.newer;
  }

  // ---------------------------------------------------------------- health

  health(): StoreHealth {
    const h: StoreHealth = { driver: 'redis', healthy: this.healthy, since: this.healthSince, lastKnownKeys: this.lastKnown.size };
    if (this.newer) h.error = this.newer.message;
    else if (!this.healthy && this.lastError) h.error = this.lastError;
    return h;
  }

  private connectionClosed(): void {
    // A clean close by the server (shutdown, crash) raises no 'error': name it here.
    if (this.healthy || !this.lastError) this.lastError = 'connection to Redis lost';
    this.updateHealth();
  }

  private updateHealth(): void {
    if (this.closed) return;
    const now = this.main.status === 'ready' && this.formatKnown && !this.newer && (this.sub === null || this.subReady) && !this.stalled;
    if (now === this.healthy) return;
    this.healthy = now;
    this.healthSince = Date.now();
    if (!now) this.log.warn({ evt: 'store.unavailable', err: this.lastError }, 'redis store unreachable; serving last known values');
    else if (this.everHealthy) this.log.info({ evt: 'store.recovered' }, 'redis store reachable again');
    if (now) this.lastError = undefined;
    this.everHealthy ||= now;
  }

  // ---------------------------------------------------------------- Store: strings

  async get(key: string): Promise<string | null> {
    return this.read(key, (s) => this.main.get(this.k(key)).then((v) => (this.lastKnown.putString(key, v, s), v)), () => this.lastKnown.get(key));
  }

  async set(key: string, value: string, opts: SetOptions = {}): Promise<boolean> {
    const args: (string | number)[] = [this.k(key), String(value)];
    if (opts.ttlMs !== undefined) args.push('PX', ttlArg(opts.ttlMs));
    if (opts.ifAbsent) args.push('NX');
    return this.write(async (s) => {
      const ok = (await this.main.call('SET', ...args)) === 'OK';
      if (ok) {
        if (opts.ttlMs === undefined) this.lastKnown.putString(key, String(value), s);
        else this.lastKnown.forget(key, s);
      }
      return ok;
    });
  }

  async del(...keys: string[]): Promise<number> {
    if (keys.length === 0) return this.write(async () => 0);
    return this.write(async (s) => {
      const n = await this.main.del(...keys.map((k) => this.k(k)));
      for (const k of keys) this.lastKnown.putString(k, null, s);
      return n;
    });
  }

  async incr(key: string, opts: { by?: number; ttlMs?: number } = {}): Promise<number> {
    const by = opts.by ?? 1;
    if (!Number.isInteger(by)) throw new RangeError('incr: `by` must be an integer');
    const ttl = opts.ttlMs === undefined ? undefined : ttlArg(opts.ttlMs);
    return this.write(async (s) => {
      const n = ttl === undefined ? await this.main.incrby(this.k(key), by) : await this.main.posternIncrTtl(this.k(key), by, ttl);
      this.lastKnown.forget(key, s);
      return Number(n);
    });
  }

  async ttl(key: string): Promise<number> {
    return this.write(() => this.main.pttl(this.k(key)));
  }

  // ---------------------------------------------------------------- Store: hashes

  async hget(key: string, field: string): Promise<string | null> {
    return this.read(key, (s) => this.main.hget(this.k(key), field).then((v) => (this.lastKnown.putField(key, field, v, s), v)), () => this.lastKnown.hget(key, field));
  }

  async hset(key: string, field: string, value: string): Promise<void> {
    await this.write(async (s) => {
      await this.main.hset(this.k(key), field, String(value));
      this.lastKnown.putField(key, field, String(value), s);
    });
  }

  async hdel(key: string, ...fields: string[]): Promise<number> {
    if (fields.length === 0) return this.write(async () => 0);
    return this.write(async (s) => {
      const n = await this.main.hdel(this.k(key), ...fields);
      for (const f of fields) this.lastKnown.putField(key, f, null, s);
      return n;
    });
  }

  async hgetall(key: string): Promise<Record<string, string>> {
    return this.read(
      key,
      async (s) => {
        // ioredis builds the object with defineProperty for names such as "__proto__"; copied
        // with fromEntries, which keeps them own, ordinary fields.
        const out = Object.fromEntries(Object.entries(await this.main.hgetall(this.k(key)))) as Record<string, string>;
        this.lastKnown.putHash(key, out, s);
        return out;
      },
      () => this.lastKnown.hgetall(key),
    );
  }

  // ---------------------------------------------------------------- Store: keys

  async keys(prefix: string): Promise<string[]> {
    return this.read(null, () => this.scan(prefix), () => this.lastKnown.keys(prefix));
  }

  // ---------------------------------------------------------------- Store: pub/sub

  async publish(channel: string, message: string): Promise<void> {
    this.check();
    // Our own subscriptions first: a handler subscribed before this call must get the event.
    if (this.pendingSubs.size) await Promise.allSettled([...this.pendingSubs]);
    await this.write(() => this.main.publish(this.prefix + channel, String(message)));
  }

  subscribe(channel: string, handler: (ev: ChangeEvent) => void): () => void {
    this.check();
    const off = this.subscribers.add(channel, handler);
    this.ensureServerSubscription(channel);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      off();
      if (!this.subscribers.has(channel) && this.serverChannels.delete(channel) && this.sub && this.subReady) {
        this.sub.unsubscribe(this.prefix + channel).catch(() => undefined);
      }
    };
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.closing = (async () => {
        if (this.refreshTimer) clearTimeout(this.refreshTimer);
        if (this.formatTimer) clearInterval(this.formatTimer);
        this.subscribers.clear();
        await Promise.allSettled([quit(this.main), this.sub ? quit(this.sub) : Promise.resolve()]);
      })();
    }
    return this.closing;
  }

  // ---------------------------------------------------------------- internals: commands

  private k(key: string): string {
    return this.prefix + key;
  }

  private check(): void {
    if (this.closed) throw new Error('store is closed');
    if (this.newer) throw this.newer;
  }

  private connectionOptions(): RedisOptions {
    return {
      lazyConnect: false,
      // Never queue or resend while disconnected (see the header): the caller fails at once.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false,
      commandTimeout: this.opts.commandTimeoutMs,
      connectTimeout: this.opts.connectTimeoutMs,
      retryStrategy: (n: number) => reconnectDelay(n),
    };
  }

  /** Runs `op` when connected; connection trouble becomes StoreUnavailableError, Redis's own errors pass. */
  private async write<T>(op: (seq: number) => Promise<T>): Promise<T> {
    this.check();
    if (this.main.status !== 'ready') {
      if (!this.settled) await this.firstAttempt;
      this.check();
      if ((this.main.status as string) !== 'ready') throw new StoreUnavailableError(this.lastError ?? `connection ${this.main.status}`);
    }
    if (!this.formatKnown) await this.checkFormat();
    const seq = this.lastKnown.next();
    try {
      const v = await op(seq);
      if (this.stalled) this.setStalled(false);
      return v;
    } catch (e) {
      if (isReplyError(e)) {
        if (this.stalled) this.setStalled(false);
        throw e;
      }
      // A connection that is open but does not answer (server stopped, network black hole) is
      // an outage too, until a command gets through again.
      if (e instanceof Error && /timed out/i.test(e.message)) this.setStalled(true);
      throw new StoreUnavailableError(e instanceof Error ? e.message : String(e), { cause: e });
    }
  }

  /**
   * Reads the format key on the current connection (one check at a time); resolves when it is
   * ours, rejects with StoreFormatError when it is not, or StoreUnavailableError.
   */
  private checkFormat(): Promise<void> {
    this.formatCheck ??= (async () => {
      let found: string;
      try {
        found = await this.main.posternFormat(this.k(FORMAT_KEY), String(REDIS_FORMAT));
      } catch (e) {
        // WRONGTYPE: the key holds a hash or a list, no format this build wrote. Any other error
        // reply (BUSY, READONLY, OOM, NOPERM, LOADING) says nothing about the data: a temporary
        // failure, tried again by the next command or the timer.
        if (isReplyError(e) && /^WRONGTYPE\b/.test((e as Error).message)) throw this.metNewerFormat('(not a string)');
        if (e instanceof Error && /timed out/i.test(e.message)) this.setStalled(true);
        throw new StoreUnavailableError(e instanceof Error ? e.message : String(e), { cause: e });
      }
      if (found !== String(REDIS_FORMAT)) throw this.metNewerFormat(/^\d+$/.test(found) ? Number(found) : found);
      if (this.stalled) this.setStalled(false);
      if (this.formatKnown || this.main.status !== 'ready') return;
      this.formatKnown = true;
      this.updateHealth();
      void this.warm();
    })().finally(() => (this.formatCheck = null));
    return this.formatCheck;
  }

  /** The data is in format `found`, not this build's: from now on nothing is read or written. */
  private metNewerFormat(found: unknown): StoreFormatError {
    if (!this.newer) {
      const where = `Redis store ${redactUrl(this.opts.url)} (prefix "${this.prefix}")`;
      this.newer = new StoreFormatError(where, found, REDIS_FORMAT);
      this.healthy = false;
      this.healthSince = Date.now();
      this.log.error({ evt: 'store.format_newer', prefix: this.prefix, found, supported: REDIS_FORMAT }, this.newer.message);
      // Subscribers drop what they cached (the directory's users, say): their next read fails.
      // Nothing is delivered after this.
      for (const c of this.subscribers.channels()) this.deliver({ channel: c, message: '{"resync":true}' }, true);
    }
    return this.newer;
  }

  private setStalled(on: boolean): void {
    this.stalled = on;
    if (on) this.lastError = 'commands time out';
    this.updateHealth();
  }

  /** A read: from Redis when possible; during an outage from the last known values, if any. */
  private async read<T>(key: string | null, op: (seq: number) => Promise<T>, fallback: () => Lookup<T>): Promise<T> {
    try {
      return await this.write(op);
    } catch (e) {
      // Last known values stand in for a store that cannot be reached, not for one in a format
      // this build does not know.
      if (!(e instanceof StoreUnavailableError) || e instanceof StoreFormatError || this.closed) throw e;
      const known = fallback();
      if (known.hit) return known.value;
      if (key !== null) this.log.debug({ evt: 'store.error', key }, 'redis store unreachable and no last known value');
      throw e;
    }
  }

  private async scan(prefix: string): Promise<string[]> {
    const found = new Set<string>();
    let cursor = '0';
    do {
      const [next, batch] = await this.main.scan(cursor, 'MATCH', globEscape(this.prefix + prefix) + '*', 'COUNT', SCAN_COUNT);
      cursor = next;
      for (const k of batch) found.add(k.slice(this.prefix.length));
    } while (cursor !== '0');
    found.delete(FORMAT_KEY); // the driver's own, not a caller's
    return [...found];
  }

  // ---------------------------------------------------------------- internals: last known values

  /** Loads the last known values now (tests; the driver does it by itself after connecting). */
  async refreshLastKnown(): Promise<void> {
    this.check();
    if (this.warming) await this.warming;
    return this.warm();
  }

  /**
   * Loads every key `store.last_known` covers. Runs when the connection becomes ready and, at
   * most every `refreshMs`, after change events (another node's writes this node did not read).
   */
  private warm(): Promise<void> {
    if (this.warming) return this.warming;
    if (this.newer) return Promise.resolve();
    this.lastRefresh = Date.now();
    this.warming = (async () => {
      try {
        const exact = [...this.lastKnown.exact];
        if (exact.length) await this.load(exact, this.lastKnown.next());
        // One pass over the deployment's keys for all covered prefixes (SCAN walks the whole
        // database whatever MATCH says, so one pass is cheaper than one per prefix).
        const prefixes = this.lastKnown.prefixes;
        if (prefixes.length) {
          const started = this.lastKnown.next();
          let cursor = '0';
          do {
            const [next, batch] = await this.main.scan(cursor, 'MATCH', globEscape(this.prefix) + '*', 'COUNT', SCAN_COUNT);
            cursor = next;
            const keys = [...new Set(batch)].map((k) => k.slice(this.prefix.length)).filter((k) => prefixes.some((p) => k.startsWith(p)));
            if (keys.length) await this.load(keys, this.lastKnown.next());
          } while (cursor !== '0');
          for (const p of prefixes) this.lastKnown.finishPrefix(p, started);
        }
      } catch (err) {
        if (!this.closed) this.log.warn({ evt: 'store.error', err }, 'redis store: could not load the last known values');
      } finally {
        this.warming = null;
      }
    })();
    return this.warming;
  }

  private async load(keys: string[], seq: number): Promise<void> {
    const got = await this.main.posternLoad(keys.length, ...keys.map((k) => this.k(k)));
    got.forEach(([type, value], i) => {
      const key = keys[i]!;
      if (type === 'string') this.lastKnown.putString(key, value as string, seq);
      else if (type === 'hash') this.lastKnown.putHash(key, Object.fromEntries(pairs(value as string[])) as Record<string, string>, seq);
      else if (type === 'none') this.lastKnown.putString(key, null, seq);
      else this.lastKnown.forget(key, seq);
    });
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer || this.closed) return;
    const wait = Math.max(0, this.lastRefresh + this.opts.refreshMs - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      if (this.main.status === 'ready') void this.warm();
    }, wait);
    this.refreshTimer.unref();
  }

  // ---------------------------------------------------------------- internals: subscriber

  private subscriber(): Redis {
    if (this.sub) return this.sub;
    const sub = new Redis(this.opts.url, this.connectionOptions());
    this.sub = sub;
    sub.on('error', (err: Error) => (this.lastError = err.message));
    sub.on('message', (channel: string, message: string) => {
      if (!channel.startsWith(this.prefix)) return;
      this.scheduleRefresh();
      this.deliver({ channel: channel.slice(this.prefix.length), message });
    });
    sub.on('close', () => {
      this.releaseSubWaiters();
      this.subReady = false;
      this.connectionClosed();
    });
    sub.on('ready', () => {
      const reconnect = this.subWasReady;
      this.subWasReady = true;
      const channels = [...this.serverChannels];
      const subscribed = channels.length ? sub.subscribe(...channels.map((c) => this.prefix + c)) : Promise.resolve();
      const p = subscribed.then(
        () => {
          this.releaseSubWaiters();
          if (sub.status !== 'ready') return;
          this.subReady = true;
          this.updateHealth();
          // Whatever was published while we were away is lost: tell every listener to reload.
          if (reconnect) for (const c of this.subscribers.channels()) this.deliver({ channel: c, message: '{"resync":true}' });
        },
        (err: unknown) => {
          this.releaseSubWaiters();
          if (this.closed) return;
          // Start over: unhealthy until a fresh connection has subscribed everything.
          this.log.warn({ evt: 'store.error', err }, 'redis store: subscribing failed; reconnecting');
          sub.disconnect(true);
        },
      );
      this.track(p);
    });
    return sub;
  }

  private ensureServerSubscription(channel: string): void {
    if (this.serverChannels.has(channel)) return;
    this.serverChannels.add(channel);
    const sub = this.subscriber();
    // Not connected yet: the 'ready' handler subscribes every channel in serverChannels (a
    // channel subscribed twice, by both paths, is harmless).
    if (sub.status !== 'ready') {
      this.track(new Promise<void>((resolve) => this.subWaiters.push(resolve)));
      return;
    }
    this.track(sub.subscribe(this.prefix + channel).catch((err: unknown) => this.log.warn({ evt: 'store.error', err, channel }, 'redis store: subscribe failed')));
  }

  private releaseSubWaiters(): void {
    for (const w of this.subWaiters.splice(0)) w();
  }

  private track(p: Promise<unknown>): void {
    this.pendingSubs.add(p);
    void p.finally(() => this.pendingSubs.delete(p));
  }

  private deliver(ev: ChangeEvent, last = false): void {
    if (this.closed || (this.newer && !last)) return;
    this.subscribers.deliver(ev, (err) => this.log.error({ evt: 'store.error', err, channel: ev.channel }, 'redis store: subscriber threw'));
  }
}

export function createRedisStore(opts: RedisStoreOptions): RedisStore {
  return new RedisStore(opts);
}

/** PX wants a positive integer; the contract rejects anything else. */
function ttlArg(ttlMs: number): number {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError('ttlMs must be a positive number');
  return Math.max(1, Math.ceil(ttlMs));
}

function pairs(flat: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

/** SCAN MATCH is a glob: a prefix with *, ?, [ or \ must match literally. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

/** The URL without its password, for messages. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'at the configured URL';
  }
}

function isReplyError(e: unknown): boolean {
  // Redis answered (WRONGTYPE, "not an integer", a script error): the request was bad, the store is fine.
  return e instanceof Error && e.name === 'ReplyError';
}

async function quit(c: Redis): Promise<void> {
  if (c.status === 'end') return;
  if (c.status !== 'ready') {
    c.disconnect();
    return;
  }
  try {
    await c.quit();
  } catch {
    c.disconnect();
  }
}
