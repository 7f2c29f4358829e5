// One root pino logger; modules take children ({cid, proto, remote}, then {qid}, then {plugin}).
// Passwords and auth secrets are redacted; message bodies are never passed to a logger.
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogEvent } from './events.js';

export type { Logger };

export const REDACT = ['password', '*.password', 'auth.password', 'auth.*.password', 'pass', '*.pass', 'token', '*.token', 'authorization', '*.authorization'];

export function createLogger(level: string = 'info', dest?: DestinationStream): Logger {
  return pino({ level, base: { svc: 'postern' }, redact: { paths: REDACT, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger that drops everything (tests, CLI commands that must print only their own output). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Typed helper so every event name comes from the closed catalogue in events.ts. */
export function logEvent(log: Logger, level: 'info' | 'warn' | 'error' | 'debug', evt: LogEvent, fields: Record<string, unknown>, msg?: string): void {
  log[level]({ evt, ...fields }, msg);
}
