// What a `postern` subcommand gets instead of reaching for `process`: its standard streams and
// environment. Subcommands return their exit code (0 ok, 1 failed, 2 usage error) and never call
// process.exit, so they can run inside tests. Shared by every module under src/cli/.
import type { Readable, Writable } from 'node:stream';

export interface CliIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
}

/** Exit codes, as sysexits would have them but fewer. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export function processIo(): CliIo {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Writes one line (a newline added). */
export function say(stream: Writable, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** A usage error: the message, then how to get help. */
export function usageError(io: CliIo, command: string, message: string): number {
  say(io.stderr, `postern ${command}: ${message}`);
  say(io.stderr, `Run 'postern ${command} --help' for usage.`);
  return EXIT.usage;
}
