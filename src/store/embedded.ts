// The embedded Store driver: single node, no Redis, state persisted under `<data_dir>/state/`,
// shared safely by every Postern process on the host (the daemon and CLI commands such as
// `postern user add` open it at the same time). Semantics are store.ts's (Redis's subset).
//
// Files (all in `<data_dir>/state/`):
//   store.lock                the flock(2) every writer holds while it appends or compacts
//   store.snapshot.json       the compacted state at generation G (written to .tmp, fsynced,
//                             renamed, directory fsynced); absent until the first compaction (G=0)
//   store.journal.<G>.jsonl   every change since that snapshot, appended under the lock, one
//                             line per batch of writes: the entry object (state-map.ts lists
//                             the kinds), or an array of entries when the batch holds several,
//                             so a reader applies a batch whole or not at all. Its first line
//                             names the format it is in (`{"o":"format","v":1}`)
//
// Format (STORE_FORMAT in state-map.ts). The snapshot's `version` and the journal's format line
// (any JSON object line whose `o` is "format") say which format the files are in; a journal
// without one (written by a build before the line existed) is format 1, as is a format line
// anywhere else in a journal that says 1. A build that finds any other format, in the snapshot or
// in any journal line it reads, reads and writes nothing more: applying the lines it knows and
// skipping the rest, then compacting that into a snapshot, would lose what the newer build wrote.
// So a build that raises the format writes its format line before its first line in the new
// format, whether it starts a journal or goes on with one an older build started. Opening such a
// store throws StoreFormatError with what to do; a running process that meets it (a newer CLI
// wrote to the store of an older daemon) logs `store.format_newer` once, tells its subscribers to
// resync (so caches drop), reports itself unhealthy (`GET /readyz`) and fails every later call
// with that error, which sessions answer 451 4.3.0 as for a store that cannot be reached. Nothing
// is lost; mail waits until the newer build runs. Lines of a known format that are not entries
// (corrupt, or an unknown kind) are skipped with a warning, as before.
//
// Multi-process protocol:
//   - Reads are served from memory. Before a read the process catches up: one fstat of the
//     journal and, when it grew, a read of the new lines; the reads of one callback's chain of
//     microtasks share one look. So a change another process made before a callback that the
//     event loop dispatched (socket data, a timer, an immediate: how every command and request
//     reaches us) began is seen by every read in it. Callbacks queued together with
//     process.nextTick run before any microtask, so they share the first one's look; none of
//     our read paths starts that way. Pub/sub entries are picked up by an fs.watch on the folder
//     and a short poll (`pollMs`), and delivered to this process's subscribers.
//   - A write takes the lock, catches up, decides (SET NX, INCR's value and WRONGTYPE checks are
//     made against the caught-up state, so they are atomic across processes), appends one line
//     with one write(2), fsyncs when needed, and releases the lock. Writes queued in the same
//     event-loop turn go out as one batch: one lock, one write, at most one fsync (group commit).
//   - Compaction (when the journal outgrows max(compactMinBytes, the last snapshot)) runs under
//     the lock: snapshot G+1 is written, journal G+1 is created, an end line is appended to
//     journal G, snapshot G+1 is renamed into place (the commit) and journal G unlinked. Others
//     meet the end line at their next look, before any read is served, and reload under the
//     lock, where the snapshot decides. So a journal G that could not be unlinked leaves no reader
//     behind (it is removed by the next process that opens the store); its link count falling to
//     0, and the snapshot's change seen by the poll, are signals too. An end line left by a
//     compaction that failed before its commit costs one reload. A process that slept through two
//     compactions may have missed published events: it delivers `{"resync":true}` on every
//     channel it listens to.
//
// Durability: persistent writes (SET without TTL, DEL, HSET, HDEL, INCR of a key without TTL) are
// fsynced before the promise resolves. Keys with a TTL (greylist triplets, rate counters, caches:
// the hot INCR at RCPT/AUTH) and PUBLISH are appended without fsync. They reach the kernel before
// the promise resolves, so other processes see them and a crash of Postern loses nothing; only a
// power loss or kernel crash can drop the last few of them, which costs at worst a repeated
// greylist delay or a reset rate window. A torn last line (a writer died mid-write) is skipped on
// replay, and the next writer ends it with CAN and a newline (CAN is never part of a JSON text),
// so the following entries stay intact and a line that lacked only its newline stays unreadable.
//
// A batch the disk refuses is rejected whole and leaves nothing any reader applies, now or after
// a restart: a write that stopped part-way is a torn line (its newline is the last byte, never
// written); a batch whose fsync failed is complete, and other processes may have applied it
// already, so a void line follows it: readers skip a batch followed by one, and a process that
// meets a void after applying its batch reloads. The writer rebuilds its memory from the files.
// Limits: a void that cannot be written either leaves the batch in place (logged), and the void
// is not durable, so after a power loss the disk may hold the batch without it. Events of such a
// batch may have been delivered already; subscribers treat events as hints anyway.
// The lock is never held across an event-loop turn, and is taken with non-blocking attempts, so a
// stuck peer makes writes fail after `lockTimeoutMs` instead of hanging the daemon.
//
// Config keys read: `data_dir` (by the caller, which passes it in), `store.driver: embedded`.
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlinkSync, watch, writeSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { silentLogger } from '../log/logger.js';
import { StoreFormatError, StoreUnavailableError } from './errors.js';
import { lock, lockSync, unlockSync } from './flock.js';
import { STORE_FORMAT, StateMap, type JournalEntry, type Planned } from './state-map.js';
import { Subscribers } from './subscribers.js';
import type { ChangeEvent, SetOptions, Store, StoreHealth } from './store.js';

export interface EmbeddedStoreOptions {
  log?: Logger;
  /** The journal is compacted once larger than this and than the last snapshot. Default 4 MiB. */
  compactMinBytes?: number;
  /** Fallback poll for other processes' changes and events, in ms (fs.watch is the fast path). Default 200. */
  pollMs?: number;
  /** How long a write waits for the lock before failing. Default 10 s. */
  lockTimeoutMs?: number;
  /** Expired keys are dropped from memory this often (ms). Default 60 s. */
  sweepMs?: number;
}

const SNAPSHOT = 'store.snapshot.json';
const LOCK = 'store.lock';
const journalName = (gen: number) => `store.journal.${gen}.jsonl`;
const JOURNAL_RE = /^store\.journal\.(\d+)\.jsonl$/;
const NL = 0x0a;
/** Ends a torn line for good: U+0018 (CAN) is never part of a JSON text (see the header). */
const TORN_END = '\u0018\n';
/** Follows a batch whose fsync failed: that batch never happened (see the header). */
const VOID_LINE = '{"o":"void"}';
/** Ends a journal that a compaction replaces: its readers reload (see the header). */
const END_LINE = '{"o":"end"}';
/** The first line of every journal this build creates: the format the lines after it are in. */
const FORMAT_LINE = `{"o":"format","v":${STORE_FORMAT}}`;
/** Why reads fail while a reload could not load the files (logged when it happened). */
const UNLOADED = "the store's files could not be loaded; see the log";

interface PendingOp {
  plan: (state: StateMap, now: number) => Planned<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class EmbeddedStore implements Store {
  readonly dir: string;
  private readonly log: Logger;
  private readonly compactMinBytes: number;
  private readonly lockTimeoutMs: number;
  private readonly lockPath: string;
  private readonly snapPath: string;
  private readonly lockFd: number;

  private state = new StateMap();
  private gen = 0;
  private jfd = -1;
  /** Bytes of the journal consumed (applied, or held in `partial`). */
  private offset = 0;
  /** An incomplete last line: a write in progress elsewhere, or torn by a crash. */
  private partial: Buffer = Buffer.alloc(0);
  /** Memory holds a batch that a void line later took back: rebuild it from the files. */
  private voided = false;
  /** The journal we read has ended (a compaction): reload under the lock, where the snapshot decides. */
  private ended = false;
  /** Identity of the snapshot we loaded (null: none existed). */
  private snapIdent: string | null = null;
  private snapBytes = 0;
  /** The files are in a newer format than this build's: every call fails with it (see the header). */
  private newer: StoreFormatError | null = null;
  /** When `health()`'s answer last changed. */
  private healthSince = Date.now();

  private readonly subscribers = new Subscribers();
  private deliveries: ChangeEvent[] = [];
  private deliveryScheduled = false;

  private pending: PendingOp[] = [];
  private flushQueued = false;
  /** Every lock-holding job of this process runs in this chain, one at a time. */
  private chain: Promise<void> = Promise.resolve();
  private reloadQueued = false;

  private readonly watcher: FSWatcher | undefined;
  private readonly pollTimer: NodeJS.Timeout;
  private readonly sweepTimer: NodeJS.Timeout;
  private closed = false;
  private closing: Promise<void> | null = null;

  constructor(dataDir: string, opts: EmbeddedStoreOptions = {}) {
    this.dir = join(dataDir, 'state');
    this.log = opts.log ?? silentLogger();
    this.compactMinBytes = opts.compactMinBytes ?? 4 * 1024 * 1024;
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    this.lockPath = join(this.dir, LOCK);
    this.snapPath = join(this.dir, SNAPSHOT);

    const created = !existsSync(this.dir);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (created) fsyncDir(dataDir);
    this.lockFd = openSync(this.lockPath, 'a+', 0o600);
    try {
      // Opening is consistent only under the lock: a compaction could otherwise swap the
      // snapshot between our reading it and opening its journal.
      lockSync(this.lockFd, this.lockPath, this.lockTimeoutMs);
      try {
        this.loadAll(false);
        this.removeStaleFiles();
      } finally {
        unlockSync(this.lockFd);
      }
    } catch (e) {
      if (this.jfd >= 0) closeSync(this.jfd);
      closeSync(this.lockFd);
      throw e;
    }

    try {
      this.watcher = watch(this.dir, { persistent: false }, () => this.poke(false));
      this.watcher.on('error', () => undefined);
    } catch {
      this.watcher = undefined; // the poll still covers it
    }
    this.pollTimer = setInterval(() => this.poke(true), opts.pollMs ?? 200);
    this.pollTimer.unref();
    this.sweepTimer = setInterval(() => this.state.sweep(Date.now()), opts.sweepMs ?? 60_000);
    this.sweepTimer.unref();
  }

  // ---------------------------------------------------------------- Store: reads

  async get(key: string): Promise<string | null> {
    await this.catchUp();
    return this.state.get(key, Date.now());
  }

  async ttl(key: string): Promise<number> {
    await this.catchUp();
    return this.state.ttl(key, Date.now());
  }

  async hget(key: string, field: string): Promise<string | null> {
    await this.catchUp();
    return this.state.hget(key, field, Date.now());
  }

  async hgetall(key: string): Promise<Record<string, string>> {
    await this.catchUp();
    return this.state.hgetall(key, Date.now());
  }

  async keys(prefix: string): Promise<string[]> {
    await this.catchUp();
    return this.state.keys(prefix, Date.now());
  }

  // ---------------------------------------------------------------- Store: writes

  set(key: string, value: string, opts: SetOptions = {}): Promise<boolean> {
    const v = String(value);
    // Validate the TTL now, so a bad call fails without touching the batch.
    if (opts.ttlMs !== undefined && (!Number.isFinite(opts.ttlMs) || opts.ttlMs <= 0)) return Promise.reject(new RangeError('ttlMs must be a positive number'));
    return this.enqueue((s, now) => s.planSet(key, v, opts.ttlMs, opts.ifAbsent === true, now));
  }

  del(...keys: string[]): Promise<number> {
    return this.enqueue((s, now) => s.planDel(keys, now));
  }

  incr(key: string, opts: { by?: number; ttlMs?: number } = {}): Promise<number> {
    return this.enqueue((s, now) => s.planIncr(key, opts.by ?? 1, opts.ttlMs, now));
  }

  hset(key: string, field: string, value: string): Promise<void> {
    const v = String(value);
    return this.enqueue((s, now) => s.planHset(key, field, v, now));
  }

  hdel(key: string, ...fields: string[]): Promise<number> {
    return this.enqueue((s, now) => s.planHdel(key, fields, now));
  }

  publish(channel: string, message: string): Promise<void> {
    const m = String(message);
    return this.enqueue(() => ({ entries: [{ o: 'pub', c: channel, m }], result: undefined }));
  }

  subscribe(channel: string, handler: (ev: ChangeEvent) => void): () => void {
    this.check();
    return this.subscribers.add(channel, handler);
  }

  /** Writes what is queued, then releases files, watcher and timers. Later calls reject. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        await this.chain;
        this.closed = true;
        this.watcher?.close();
        clearInterval(this.pollTimer);
        clearInterval(this.sweepTimer);
        this.subscribers.clear();
        if (this.jfd >= 0) closeSync(this.jfd); // -1 after a reload that could not load the files
        closeSync(this.lockFd);
      })();
    }
    return this.closing;
  }

  // ---------------------------------------------------------------- internals: writing

  private check(): void {
    if (this.closed || this.closing) throw new Error('store is closed');
    if (this.newer) throw this.newer;
  }

  health(): StoreHealth {
    const error = this.newer?.message ?? (this.jfd < 0 ? UNLOADED : undefined);
    return { driver: 'embedded', healthy: error === undefined, since: this.healthSince, ...(error ? { error } : {}) };
  }

  /** The files are in format `found`, not this build's: from now on nothing is read or written. */
  private metNewerFormat(found: unknown): StoreFormatError {
    if (!this.newer) {
      this.newer = new StoreFormatError(this.dir, found, STORE_FORMAT);
      this.healthSince = Date.now();
      this.log.error({ evt: 'store.format_newer', dir: this.dir, found, supported: STORE_FORMAT }, this.newer.message);
      // Subscribers drop what they cached (the directory's users, say): their next read fails.
      for (const channel of this.subscribers.channels()) this.queueDelivery({ channel, message: '{"resync":true}' });
    }
    return this.newer;
  }

  private enqueue<T>(plan: (state: StateMap, now: number) => Planned<T>): Promise<T> {
    try {
      this.check();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ plan, resolve: resolve as (v: unknown) => void, reject });
      if (!this.flushQueued) {
        this.flushQueued = true;
        // setImmediate lets every write issued in this turn join the batch.
        this.exclusive(
          () => new Promise<void>((r) => setImmediate(r)),
          () => this.flushLocked(),
          (e) => this.failPending(e),
        );
      }
    });
  }

  /**
   * Runs `locked` with the flock held, after `before`, in this process's chain. `locked` is
   * synchronous, so the lock never spans an event-loop turn. Errors go to the callers' promises;
   * the chain itself never rejects.
   */
  private exclusive(before: () => Promise<void>, locked: () => void, onLockError: (e: unknown) => void): Promise<void> {
    const job = this.chain.then(async () => {
      await before();
      try {
        await lock(this.lockFd, this.lockPath, this.lockTimeoutMs);
      } catch (e) {
        onLockError(e);
        return;
      }
      try {
        locked();
      } finally {
        unlockSync(this.lockFd);
      }
    });
    this.chain = job.catch((e: unknown) => {
      this.log.error({ evt: 'store.error', err: e }, 'embedded store: locked job failed');
    });
    return this.chain;
  }

  private failPending(e: unknown): void {
    this.flushQueued = false;
    const batch = this.pending.splice(0);
    for (const op of batch) op.reject(e);
  }

  private flushLocked(): void {
    this.flushQueued = false;
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    const published: ChangeEvent[] = [];
    try {
      const torn = this.syncLocked();
      const now = Date.now();
      const entries: JournalEntry[] = [];
      let durable = false;
      for (const op of batch) {
        try {
          const p = op.plan(this.state, now);
          for (const e of p.entries) {
            this.state.apply(e, now);
            entries.push(e);
            durable ||= StateMap.durable(e);
            if (e.o === 'pub') published.push({ channel: e.c, message: e.m });
          }
          outcomes.push({ ok: true, value: p.result });
        } catch (err) {
          outcomes.push({ ok: false, err }); // WRONGTYPE and the like: this op only
        }
      }
      if (entries.length) {
        const record = JSON.stringify(entries.length === 1 ? entries[0] : entries);
        const buf = Buffer.from((torn ? TORN_END : '') + record + '\n', 'utf8');
        this.appendBatch(buf, durable);
        this.offset += buf.length;
      }
    } catch (err) {
      if (this.newer) {
        // Catching up met a newer format: nothing was appended, and nothing more will be.
        for (const op of batch) op.reject(this.newer);
        return;
      }
      // The disk refused (ENOSPC, EIO…): memory holds the batch, which no reader of the files
      // applies (appendBatch). Rebuild from the files, which are the truth, and fail the batch.
      this.log.error({ evt: 'store.error', err }, 'embedded store: journal write failed; reloading');
      try {
        this.reloadLocked();
      } catch (e2) {
        this.log.error({ evt: 'store.error', err: e2 }, 'embedded store: reload failed');
      }
      for (const op of batch) op.reject(err);
      return;
    }
    for (const ev of published) this.queueDelivery(ev);
    batch.forEach((op, i) => {
      const o = outcomes[i]!;
      if (o.ok) op.resolve(o.value);
      else op.reject(o.err);
    });
    if (this.offset > Math.max(this.compactMinBytes, this.snapBytes)) {
      try {
        this.compactLocked();
      } catch (err) {
        // The journal stays valid; compaction is retried after the next write.
        this.log.error({ evt: 'store.error', err }, 'embedded store: compaction failed');
      }
    }
  }

  // The journal's disk writes that a sound disk can still refuse (ENOSPC, EIO), one method each,
  // so that tests can inject those faults here.

  /** Appends `buf` to the journal (O_APPEND); a failure may leave a part of it written. */
  private writeJournal(buf: Buffer): void {
    writeAll(this.jfd, buf);
  }

  private syncJournal(): void {
    fsyncSync(this.jfd);
  }

  private removeFile(path: string): void {
    unlinkSync(path);
  }

  /**
   * Appends one batch's line (`buf`), fsynced when `durable`. Throws the disk's refusal, having
   * left nothing a reader applies: a write that stopped part-way never wrote the newline that
   * ends the line; after a failed fsync a void line takes the complete batch back.
   */
  private appendBatch(buf: Buffer, durable: boolean): void {
    this.writeJournal(buf);
    if (!durable) return;
    try {
      this.syncJournal();
    } catch (e) {
      this.voidLastBatch();
      throw e;
    }
  }

  private voidLastBatch(): void {
    try {
      this.writeJournal(Buffer.from(`${VOID_LINE}\n`, 'utf8'));
    } catch (err) {
      this.log.error({ evt: 'store.error', err }, 'embedded store: a batch whose fsync failed could not be voided; it stays in the journal');
      return;
    }
    try {
      this.syncJournal(); // so that a power loss does not bring the batch back; the disk just failed one
    } catch {
      // readers skip the batch all the same
    }
  }

  /**
   * Under the lock: makes memory equal to the files (reloading after another process compacted,
   * or after a void took back a batch we had applied).
   * Returns true when the journal ends in a torn line, which the next append must terminate.
   */
  private syncLocked(): boolean {
    if (this.newer) throw this.newer; // the journal may be closed already (loadAll)
    if (this.jfd < 0 || snapshotIdent(this.snapPath) !== this.snapIdent) {
      this.reloadLocked();
    } else if (this.readNew(true) === 0 || this.voided) {
      this.reloadLocked();
    }
    if (this.newer) throw this.newer;
    // Under the lock no compaction is under way: an end line in our current journal is one that
    // failed before its commit, and the snapshot check above has decided.
    this.ended = false;
    if (this.partial.length === 0) return false;
    // Nobody else writes while we hold the lock, so an incomplete line is a dead writer's.
    this.log.warn({ evt: 'store.error', bytes: this.partial.length, gen: this.gen }, 'embedded store: skipping a torn journal line');
    this.partial = Buffer.alloc(0);
    return true;
  }

  private compactLocked(): void {
    const next = this.gen + 1;
    const now = Date.now();
    this.state.sweep(now);
    const tmp = `${this.snapPath}.tmp`;
    const body = Buffer.from(JSON.stringify(this.state.toSnapshot(next, now)), 'utf8');
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeAll(fd, body);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // The new journal exists (empty: a crashed compaction may have left one) before the snapshot
    // that points to it is in place. O_APPEND, as every journal descriptor must be.
    const nextPath = join(this.dir, journalName(next));
    const nfd = openSync(nextPath, 'a+', 0o600);
    try {
      ftruncateSync(nfd, 0);
      // Not fsynced: after a power loss an empty journal reads as format 1, and the snapshot
      // carries the format as well.
      writeAll(nfd, Buffer.from(`${FORMAT_LINE}\n`, 'utf8'));
      // Before the commit point: a committed compaction always has its end line, whether or not
      // journal G can be unlinked below.
      this.writeJournal(Buffer.from(`${END_LINE}\n`, 'utf8'));
      renameSync(tmp, this.snapPath); // the commit point
      fsyncDir(this.dir);
    } catch (e) {
      closeSync(nfd);
      throw e;
    }
    const oldFd = this.jfd;
    const oldPath = join(this.dir, journalName(this.gen));
    this.jfd = nfd;
    this.gen = next;
    this.offset = 0;
    this.partial = Buffer.alloc(0);
    const id = statIdent(this.snapPath);
    this.snapIdent = id?.ident ?? null;
    this.snapBytes = id?.size ?? 0;
    try {
      // Tidying up: readers reload on the end line. Its link count dropping to 0 tells them too.
      this.removeFile(oldPath);
    } catch (err) {
      this.log.warn({ evt: 'store.error', err }, 'embedded store: could not remove the old journal; the next process to open the store removes it');
    }
    closeSync(oldFd);
    this.log.info({ evt: 'store.compacted', gen: next, bytes: body.length }, 'embedded store: compacted');
  }

  // ---------------------------------------------------------------- internals: reading

  /** Before a read: our own queued writes first (read-your-writes), then other processes'. */
  private async catchUp(): Promise<void> {
    this.check();
    if (this.flushQueued || this.reloadQueued) {
      await this.chain;
      this.check(); // what the chain ran may have met a newer format
    }
    if (this.jfd < 0) {
      // The last reload could not load the files (see reloadLocked): try again, or fail this read.
      await this.requestReload();
      this.check();
      if (this.jfd < 0) throw new StoreUnavailableError(`${this.dir}: ${UNLOADED}`);
      return;
    }
    // One look per callback: the reads one SMTP command makes (routes, ACL, directory, caches)
    // run as one chain of microtasks and share it; the next callback (another socket's data, a
    // timer) looks again, even within the same event-loop iteration, because what woke it may
    // have happened after another process's write. The flag is cleared by a tick queued from a
    // microtask, and Node runs such ticks only once the microtask queue is empty, i.e. when
    // this callback's chain has settled. (Ticks already queued before it run first, without a
    // look of their own: see the header.) Our own writes are in memory already (flush applies
    // them), so reads still see those.
    if (this.lookedThisCallback) return;
    if (this.readNew(true) === 0 || this.voided || this.ended) {
      await this.requestReload();
      this.check(); // the reload may have met a newer format
      return;
    }
    this.check(); // so may the lines just read
    this.lookedThisCallback = true;
    queueMicrotask(this.endOfCallback);
  }

  private lookedThisCallback = false;
  private readonly endOfCallback = (): void => {
    process.nextTick(() => {
      this.lookedThisCallback = false;
    });
  };

  /**
   * Called by the watcher (`full` false) and the poll (`full` true): picks up other processes'
   * changes and events without waiting for a read.
   */
  private poke(full: boolean): void {
    // Without a journal (a reload that failed) the next read or write tries again, not the poll.
    if (this.closed || this.closing || this.reloadQueued || this.newer || this.jfd < 0) return;
    try {
      const nlink = this.readNew(true);
      if (nlink === 0 || this.voided || this.ended || (full && snapshotIdent(this.snapPath) !== this.snapIdent)) void this.requestReload();
    } catch (err) {
      this.log.error({ evt: 'store.error', err }, 'embedded store: reading the journal failed');
    }
  }

  private requestReload(): Promise<void> {
    if (!this.reloadQueued) {
      this.reloadQueued = true;
      this.exclusive(
        async () => undefined,
        () => {
          this.reloadQueued = false;
          try {
            this.syncLocked();
          } catch (e) {
            if (!this.newer) throw e; // a newer format is logged once, and every later call fails with it
          }
        },
        (err) => {
          this.reloadQueued = false;
          this.log.error({ evt: 'store.error', err }, 'embedded store: cannot lock to reload');
        },
      );
    }
    return this.chain;
  }

  /**
   * Reads journal lines appended since the last call and applies them; `deliver` hands published
   * events to subscribers. Returns the journal's link count (0: compacted away, reload).
   */
  private readNew(deliver: boolean): number {
    const st = fstatSync(this.jfd);
    if (st.size > this.offset) {
      const len = st.size - this.offset;
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const n = readSync(this.jfd, buf, got, len - got, this.offset + got);
        if (n === 0) break;
        got += n;
      }
      this.offset += got;
      this.consume(got === len ? buf : buf.subarray(0, got), deliver);
    }
    return st.nlink;
  }

  /** Applies the complete lines of `chunk` (after what `partial` holds); keeps the rest in `partial`. */
  private consume(chunk: Buffer, deliver: boolean): void {
    const data = this.partial.length ? Buffer.concat([this.partial, chunk]) : chunk;
    const lines: string[] = [];
    let start = 0;
    for (let nl = data.indexOf(NL, start); nl !== -1; nl = data.indexOf(NL, start)) {
      lines.push(data.toString('utf8', start, nl));
      start = nl + 1;
    }
    this.partial = start < data.length ? Buffer.from(data.subarray(start)) : Buffer.alloc(0);
    const now = Date.now();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.length === 0) continue;
      if (line === END_LINE) {
        this.ended = true;
        continue;
      }
      if (line === VOID_LINE) {
        // Its batch came in an earlier read and is applied here: rebuild from the files.
        this.voided = true;
        continue;
      }
      if (lines[i + 1] === VOID_LINE) {
        i++; // a batch whose fsync failed: it never happened
        continue;
      }
      const parsed = parseLine(line);
      if (!parsed) {
        this.log.warn({ evt: 'store.error', gen: this.gen, bytes: line.length }, 'embedded store: skipping an unreadable journal line');
        continue;
      }
      if ('format' in parsed) {
        if (parsed.format === STORE_FORMAT) continue;
        // Nothing after it can be read safely, and nothing of it is applied.
        this.metNewerFormat(parsed.format);
        this.partial = Buffer.alloc(0);
        return;
      }
      for (const entry of parsed.entries) {
        this.state.apply(entry, now);
        if (deliver && entry.o === 'pub') this.queueDelivery({ channel: entry.c, message: entry.m });
      }
    }
  }

  /** Under the lock: drains the old journal (events included), then loads snapshot + journal. */
  private reloadLocked(): void {
    const wasLoaded = this.jfd >= 0;
    try {
      this.reloadFiles();
    } finally {
      // health() says "could not be loaded" exactly while jfd is -1: its `since` follows that.
      if (wasLoaded !== this.jfd >= 0) this.healthSince = Date.now();
    }
  }

  private reloadFiles(): void {
    if (this.jfd >= 0) {
      try {
        this.readNew(true);
      } catch {
        // The old file may be gone or unreadable; the snapshot holds its effects anyway.
      }
      if (this.newer) throw this.newer;
      closeSync(this.jfd);
      // -1 until loadAll opens the next journal: if it throws (a snapshot that cannot be read, or
      // one in a newer format), reads fail and the next read or write tries again (catchUp).
      this.jfd = -1;
    }
    const before = this.gen;
    this.loadAll(true);
    if (this.gen > before + 1) {
      // A whole journal came and went between our looks: events in it were never seen here.
      for (const channel of this.subscribers.channels()) this.queueDelivery({ channel, message: '{"resync":true}' });
    }
  }

  /** Under the lock: replaces memory with snapshot + journal. */
  private loadAll(deliver: boolean): void {
    const id = statIdent(this.snapPath);
    if (id) {
      const raw: unknown = JSON.parse(readFileSync(this.snapPath, 'utf8'));
      const snap = raw as { format?: unknown; version?: unknown } | null;
      if (snap?.format === 'postern-store' && snap.version !== STORE_FORMAT) throw this.metNewerFormat(snap.version);
      const loaded = StateMap.fromSnapshot(raw);
      this.state = loaded.state;
      this.gen = loaded.gen;
    } else {
      this.state = new StateMap();
      this.gen = 0;
    }
    this.snapIdent = id?.ident ?? null;
    this.snapBytes = id?.size ?? 0;
    const path = join(this.dir, journalName(this.gen));
    const fresh = !existsSync(path);
    this.jfd = openSync(path, 'a+', 0o600);
    if (fresh) {
      writeAll(this.jfd, Buffer.from(`${FORMAT_LINE}\n`, 'utf8'));
      fsyncDir(this.dir);
    }
    this.offset = 0;
    this.partial = Buffer.alloc(0);
    this.readNew(deliver);
    if (this.newer) throw this.newer;
    // A replay reads the whole journal at once, so every void meets its batch in it; it runs
    // under the lock, so an end line in it is one a failed compaction left (see syncLocked).
    this.voided = false;
    this.ended = false;
  }

  /** Under the lock: journals older than the snapshot and a half-written snapshot (crash leftovers). */
  private removeStaleFiles(): void {
    for (const name of readdirSync(this.dir)) {
      const m = JOURNAL_RE.exec(name);
      const stale = (m && Number(m[1]) !== this.gen) || name === `${SNAPSHOT}.tmp`;
      if (!stale) continue;
      try {
        unlinkSync(join(this.dir, name));
      } catch {
        // best effort
      }
    }
  }

  // ---------------------------------------------------------------- internals: pub/sub

  private queueDelivery(ev: ChangeEvent): void {
    if (!this.subscribers.has(ev.channel)) return;
    this.deliveries.push(ev);
    if (this.deliveryScheduled) return;
    this.deliveryScheduled = true;
    // Never re-entrant: handlers run after the store's own work, as a Redis subscriber's would.
    setImmediate(() => {
      this.deliveryScheduled = false;
      const evs = this.deliveries;
      this.deliveries = [];
      for (const e of evs) {
        this.subscribers.deliver(e, (err) => this.log.error({ evt: 'store.error', err, channel: e.channel }, 'embedded store: subscriber threw'));
      }
    });
  }
}

export function createEmbeddedStore(dataDir: string, opts: EmbeddedStoreOptions = {}): EmbeddedStore {
  return new EmbeddedStore(dataDir, opts);
}

/**
 * One journal line: a format line (its `v`, whatever it is), a batch's entries (one entry, or an
 * array), or null when it is unreadable (torn, corrupt, or an entry of a kind this build lacks).
 */
function parseLine(line: string): { format: unknown } | { entries: JournalEntry[] } | null {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw) && (raw as { o?: unknown }).o === 'format') return { format: (raw as { v?: unknown }).v };
  const entries = (Array.isArray(raw) ? raw : [raw]).map((e) => StateMap.validate(e));
  // All or nothing, as the batch was written: one unknown entry drops the line.
  return entries.length > 0 && entries.every((e) => e !== null) ? { entries: entries as JournalEntry[] } : null;
}

function writeAll(fd: number, buf: Buffer): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
}

function snapshotIdent(path: string): string | null {
  return statIdent(path)?.ident ?? null;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Inode, size and mtime: changes whenever a compaction renames a new snapshot into place. */
function statIdent(path: string): { ident: string; size: number } | null {
  try {
    const st = statSync(path, { bigint: true });
    return { ident: `${st.ino}:${st.size}:${st.mtimeNs}`, size: Number(st.size) };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}
