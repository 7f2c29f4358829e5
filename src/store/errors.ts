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
