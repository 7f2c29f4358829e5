// Errors a Store can raise that callers may want to tell apart.
//
// StoreUnavailableError: the store could not be asked (Redis unreachable, a command timed out,
// the connection dropped with the command in flight). The operation may or may not have been
// applied on the server when the connection dropped mid-command; callers treat it as a temporary
// failure. It carries the SMTP reply a session should give when the store was needed to decide
// (451 4.3.0), which is also what the plugin runner answers for a hook that throws it, unless the
// plugin's entry says `on_error: fail-open`.
export class StoreUnavailableError extends Error {
  readonly code = 451;
  readonly enhanced = '4.3.0';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`store unavailable: ${message}`, options);
    this.name = 'StoreUnavailableError';
  }
}

export function isStoreUnavailable(e: unknown): e is StoreUnavailableError {
  return e instanceof StoreUnavailableError;
}

// StoreFormatError: the store's data says it was written in a format newer than this build reads
// (a newer Postern wrote it): the embedded store's files, or the Redis store's `store:format`
// key. Nothing is read or written from then on: applying part of the state, or compacting it
// into a snapshot of this format, would lose what the newer build wrote. Opening such a store
// fails with this error; a running process that meets it stops serving the store and answers
// every call with it, a temporary failure (451 4.3.0) as for a store that cannot be reached,
// until the newer build runs.
export class StoreFormatError extends StoreUnavailableError {
  constructor(
    /** Where the data is: the embedded store's folder, or the Redis server and prefix. */
    readonly dir: string,
    /** What the files say: a higher number, or something this build cannot make sense of. */
    readonly found: unknown,
    readonly supported: number,
  ) {
    super(`${dir} is in store format ${typeof found === 'number' ? found : JSON.stringify(found) ?? 'without a version'}, written by a newer Postern; this build reads format ${supported} and leaves it untouched. Run the newer build, or restore a copy of the data made before the upgrade.`);
    this.name = 'StoreFormatError';
  }
}
