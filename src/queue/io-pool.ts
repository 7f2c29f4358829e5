// A small pool of worker threads that run the durable-write sequences of the spool and of
// Maildir delivery with synchronous system calls, one message per sequence.
//
// Why: each message is written durably twice (spool, then mailbox). Done with fs/promises, every
// step (open, writev, fdatasync, close, rename, directory fsync, unlink) is a separate trip
// through libuv's thread pool, and each trip costs the event loop a wake-up, a promise and a
// FileHandle. Profiles of the SMTP → Maildir path showed those trips as the largest share of the
// main thread's time. Here a whole sequence is one postMessage out and one message back; the
// main thread is left to the protocol work.
//
// The folder fsync that makes a rename durable is part of the same sequence. Writers no longer
// share one fsync in user space (a second round trip per message cost more than it saved); the
// kernel still batches: concurrent fsyncs on ext4/XFS wait for the same journal commit.
//
// Threads start on demand (up to `maxThreads`) and a request goes to the least busy one, so
// fsyncs from many connections still run side by side and the file system can commit them
// together. The threads hold the process open only while requests are pending, so a CLI command
// that writes one file exits as soon as it is done.
//
// Errors keep their errno `code`, `syscall` and `path`, so callers test them as usual
// (`e.code === 'ENOENT'`).
//
// What a failed `writeThenRename` means for the file. Before the rename (open, write, fdatasync,
// close, the rename itself) nothing is left: the temp file is removed and the target name was
// never used. After the rename only the folder fsync can fail; the file is then in place under
// its final name, complete and visible to every reader, but the name may not survive a crash.
// That failure carries `renamed: true` and `target` (the final name), because the right answer
// differs per caller (see `renamedButNotSynced`):
//   - the spool fsyncs q/ once more (only when opening it failed: `folderSyncRetryable`) and
//     otherwise takes a new entry back (unlinks it), so a 4xx never leaves behind a message that
//     would also be delivered (spool.ts);
//   - Maildir delivery fsyncs the folder once more (on the same condition) and otherwise reports
//     a temporary failure that says the copy is stored; the retry, under the same queue id,
//     finds that copy and counts it once its folder is fsynced (maildir.ts), and LMTP answers
//     250 rather than 4xx for it (manager.ts). A new mbox file is `stored` the same way (mbox.ts).
//
// Config keys: none.
import { Worker } from 'node:worker_threads';

/** The worker's code, run with `eval` so it needs no loader (tests run the sources with tsx). */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');

// Every CRLF → LF (mailboxes store LF line ends; delivery/trace.ts), through a latin1 string:
// one code unit per byte, so any bytes round-trip exactly.
function crlfToLf(buf) {
  const text = buf.toString('latin1');
  if (!text.includes('\\r\\n')) return buf;
  const out = Buffer.allocUnsafe(buf.length);
  return out.subarray(0, out.write(text.replaceAll('\\r\\n', '\\n'), 0, 'latin1'));
}

function writeThenRename(tmp, target, parts, mode, syncDir, lf) {
  if (lf) parts = parts.map((p) => crlfToLf(Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
  // A NUL (never in a path) in the names stands for the size written (Maildir's S=).
  if (tmp.includes('\\0') || target.includes('\\0')) {
    let size = 0;
    for (const p of parts) size += p.byteLength;
    tmp = tmp.replaceAll('\\0', String(size));
    target = target.replaceAll('\\0', String(size));
  }
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    let total = 0;
    for (const p of parts) total += p.byteLength;
    let done = 0;
    // writev may write less than asked; go on from where it stopped.
    while (done < total) {
      let skip = done;
      const rest = [];
      for (const p of parts) {
        if (skip >= p.byteLength) { skip -= p.byteLength; continue; }
        rest.push(skip ? p.subarray(skip) : p);
        skip = 0;
      }
      const n = fs.writevSync(fd, rest);
      if (n <= 0) throw Object.assign(new Error('short write to ' + tmp), { code: 'EIO' });
      done += n;
    }
    fs.fdatasyncSync(fd);
  } catch (e) {
    try { fs.closeSync(fd); } catch {}
    try { fs.unlinkSync(tmp); } catch {}
    throw e;
  }
  try {
    fs.closeSync(fd);
    fs.renameSync(tmp, target);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch {}
    throw e;
  }
  if (syncDir) {
    try {
      fsyncDir(syncDir);
    } catch (e) {
      // The file is in place already: say so, and under which name (see the header).
      throw Object.assign(e, { renamed: true, target });
    }
  }
  return target;
}

function fsyncDir(dir) {
  const fd = fs.openSync(dir, 'r');
  try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
}

function errorOf(e) {
  const info = { message: e.message, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path };
  return e.renamed ? { ...info, renamed: true, target: e.target } : info;
}

// Unlinks each group's paths in order (a missing file is no error); a group stops at its first
// other error, so what follows it (an entry's side files) stays. Then fsyncs syncDir once.
// One error per group (null: all removed or absent), and the fsync's error apart.
function unlinkAll(groups, syncDir) {
  const errors = groups.map((paths) => {
    for (const p of paths) {
      try {
        fs.unlinkSync(p);
      } catch (e) {
        if (e.code !== 'ENOENT') return errorOf(e);
      }
    }
    return null;
  });
  let syncError = null;
  if (syncDir) {
    try { fsyncDir(syncDir); } catch (e) { syncError = errorOf(e); }
  }
  return { errors, syncError };
}

parentPort.on('message', (req) => {
  try {
    let path;
    let removed;
    if (req.op === 'writeThenRename') path = writeThenRename(req.tmp, req.target, req.parts, req.mode, req.syncDir, req.lf);
    else if (req.op === 'fsyncDir') fsyncDir(req.path);
    else if (req.op === 'unlinkAll') removed = unlinkAll(req.groups, req.syncDir);
    else throw new Error('unknown op ' + req.op);
    parentPort.postMessage(removed ? { id: req.id, ...removed } : path === undefined ? { id: req.id } : { id: req.id, path });
  } catch (e) {
    parentPort.postMessage({ id: req.id, error: errorOf(e) });
  }
});
`;

type Request =
  | { op: 'writeThenRename'; tmp: string; target: string; parts: Uint8Array[]; mode: number; syncDir?: string; lf?: boolean }
  | { op: 'fsyncDir'; path: string }
  | { op: 'unlinkAll'; groups: string[][]; syncDir?: string };

type ErrorInfo = { message: string; code?: string; errno?: number; syscall?: string; path?: string; renamed?: true; target?: string };

/**
 * A `writeThenRename` that failed after its rename: the file is complete under `target`, only
 * the fsync of its folder failed, so the name may not survive a crash (see the header).
 */
export interface RenamedButNotSynced extends NodeJS.ErrnoException {
  renamed: true;
  target: string;
}

/**
 * True when a failed folder fsync may be made again: it failed opening the folder (EMFILE,
 * ENFILE, ENOMEM...), before anything was asked of the disk. An fsync(2) that reported an error
 * has used it up: Linux (since 4.13) reports a writeback error once to each descriptor open when
 * it happened, so a second fsync through a new descriptor may succeed while the folder's new
 * entry is still not on disk, and success would be claimed for a name a crash can lose.
 */
export function folderSyncRetryable(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.syscall === 'open';
}

export function renamedButNotSynced(e: unknown): e is RenamedButNotSynced {
  return typeof e === 'object' && e !== null && (e as { renamed?: unknown }).renamed === true && typeof (e as { target?: unknown }).target === 'string';
}

interface Reply {
  id: number;
  /** writeThenRename: the target as written (size filled in). */
  path?: string;
  /** unlinkAll: one per group, null when all its paths are gone; and the folder fsync's. */
  errors?: (ErrorInfo | null)[];
  syncError?: ErrorInfo | null;
  error?: ErrorInfo;
}

interface Thread {
  worker: Worker;
  pending: number;
}

export class IoPool {
  private readonly threads: Thread[] = [];
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; thread: Thread }>();
  private nextId = 0;
  private closed = false;

  constructor(private readonly maxThreads = 8) {}

  /**
   * Writes `parts` to `tmp`, fdatasyncs, closes and renames it to `target`, then fsyncs
   * `syncDir` (the target's folder) when given; removes `tmp` on failure. `opts.lf` writes every
   * CRLF as LF (a mailbox file), on the pool's thread. A NUL in `tmp` and `target` is replaced by
   * the number of bytes written; resolves with the target's final name. A failure of the folder
   * fsync, after the rename, rejects with a `RenamedButNotSynced` error.
   */
  writeThenRename(tmp: string, target: string, parts: Uint8Array[], mode = 0o666, syncDir?: string, opts: { lf?: boolean } = {}): Promise<string> {
    // One buffer that owns its memory is moved to the thread, not cloned: a clone of a view
    // copies its whole backing store (Buffer.from of a short string shares an 8 KB pool slab).
    const one = Buffer.concat(parts);
    const owned = one.byteOffset === 0 && one.byteLength === one.buffer.byteLength;
    const body = owned ? one : Uint8Array.prototype.slice.call(one);
    return this.call({ op: 'writeThenRename', tmp, target, parts: [body], mode, ...(syncDir ? { syncDir } : {}), ...(opts.lf ? { lf: true } : {}) }, [body.buffer as ArrayBuffer]).then((path) => path ?? target);
  }

  /** fsync(2) of a directory, so renames and unlinks in it are durable. */
  async fsyncDir(path: string): Promise<void> {
    await this.call({ op: 'fsyncDir', path });
  }

  /**
   * Unlinks each group's paths in order on one thread (a missing file counts as removed; a
   * group stops at its first other error), then fsyncs `syncDir` when given. Resolves with one
   * error per group (undefined: all gone) and the fsync's error, if any.
   */
  async unlinkAll(groups: string[][], syncDir?: string): Promise<{ errors: (Error | undefined)[]; syncError?: Error }> {
    const r = await this.request({ op: 'unlinkAll', groups, ...(syncDir ? { syncDir } : {}) });
    return { errors: (r.errors ?? []).map((e) => (e ? toError(e) : undefined)), ...(r.syncError ? { syncError: toError(r.syncError) } : {}) };
  }

  /** Number of threads started so far (for tests and diagnostics). */
  get size(): number {
    return this.threads.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    const ts = this.threads.splice(0);
    await Promise.all(ts.map((t) => t.worker.terminate()));
    for (const [, w] of this.waiting) w.reject(new Error('I/O pool closed'));
    this.waiting.clear();
  }

  private call(req: Request, transfer: ArrayBuffer[] = []): Promise<string | undefined> {
    return this.request(req, transfer).then((r) => r.path);
  }

  private request(req: Request, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('I/O pool closed'));
    const thread = this.pick();
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, thread });
      if (thread.pending++ === 0) thread.worker.ref();
      thread.worker.postMessage({ ...req, id }, transfer);
    });
  }

  /** An idle thread if there is one, else a new one while under the cap, else the least busy. */
  private pick(): Thread {
    let best: Thread | undefined;
    for (const t of this.threads) {
      if (t.pending === 0) return t;
      if (!best || t.pending < best.pending) best = t;
    }
    if (!best || this.threads.length < this.maxThreads) return this.spawn();
    return best;
  }

  private spawn(): Thread {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    const thread: Thread = { worker, pending: 0 };
    worker.unref();
    worker.on('message', (r: Reply) => this.settle(r));
    worker.on('error', (e) => this.fail(thread, e));
    worker.on('exit', () => {
      const i = this.threads.indexOf(thread);
      if (i >= 0) this.threads.splice(i, 1);
      this.fail(thread, new Error('I/O worker exited'));
    });
    this.threads.push(thread);
    return thread;
  }

  private settle(r: Reply): void {
    const w = this.waiting.get(r.id);
    if (!w) return;
    this.waiting.delete(r.id);
    if (--w.thread.pending === 0) w.thread.worker.unref();
    if (r.error) w.reject(toError(r.error));
    else w.resolve(r);
  }

  /** A thread that died takes its requests with it: fail them rather than hang the callers. */
  private fail(thread: Thread, e: Error): void {
    for (const [id, w] of this.waiting) {
      if (w.thread !== thread) continue;
      this.waiting.delete(id);
      w.reject(e);
    }
    thread.pending = 0;
  }
}

function toError(e: ErrorInfo): Error {
  return Object.assign(new Error(e.message), e);
}

let shared: IoPool | undefined;

/** The process-wide pool (spool, Maildir, maildrop share it). */
export function ioPool(): IoPool {
  shared ??= new IoPool();
  return shared;
}
