// Reading a password for `postern user add|passwd`: either the first line of stdin
// (--password-stdin, for scripts) or, on a terminal, a prompt with echo off, asked twice.
// Nothing here logs or keeps the password beyond returning it.
// Config keys read: none.
import type { Readable, Writable } from 'node:stream';

export class PasswordInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PasswordInputError';
  }
}

/** A terminal stdin (tty.ReadStream) as far as we use it. */
interface TtyLike {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
}

export function isTerminal(stdin: Readable): boolean {
  const t = stdin as Readable & TtyLike;
  return t.isTTY === true && typeof t.setRawMode === 'function';
}

/**
 * The first line of `stdin` without its line end (LF or CRLF); the rest of the stream is left
 * unread. At end of input without a newline, what came is the line.
 */
export function readFirstLine(stdin: Readable, maxBytes = 4096): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | null, line?: string) => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.off('error', onError);
      stdin.pause();
      if (err) reject(err);
      else resolve(line!);
    };
    const onData = (chunk: Buffer | string) => {
      buf = Buffer.concat([buf, typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl !== -1) return done(null, buf.subarray(0, nl).toString('utf8').replace(/\r$/, ''));
      if (buf.length > maxBytes) done(new PasswordInputError(`the password line is longer than ${maxBytes} bytes`));
    };
    const onEnd = () => done(null, buf.toString('utf8').replace(/\r$/, ''));
    const onError = (e: Error) => done(e);
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.on('error', onError);
    stdin.resume();
  });
}

/**
 * Prompts on `out` (stderr, so stdout stays clean) and reads one line from a terminal with echo
 * off. Enter ends it; Backspace erases; Ctrl-C or Ctrl-D on an empty line aborts.
 */
export function promptHidden(stdin: Readable, out: Writable, prompt: string): Promise<string> {
  const tty = stdin as Readable & TtyLike;
  return new Promise((resolve, reject) => {
    let value = '';
    out.write(prompt);
    tty.setRawMode!(true);
    const finish = (err: Error | null) => {
      stdin.off('data', onData);
      tty.setRawMode!(false);
      stdin.pause();
      out.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
        switch (ch) {
          case '\r':
          case '\n':
            return finish(null);
          case '\u0003': // Ctrl-C
            return finish(new PasswordInputError('aborted'));
          case '\u0004': // Ctrl-D
            if (value.length === 0) return finish(new PasswordInputError('aborted'));
            break;
          case '\u007f': // Backspace (DEL), and Ctrl-H
          case '\b':
            value = [...value].slice(0, -1).join('');
            break;
          default:
            if (ch >= ' ') value += ch;
        }
      }
    };
    stdin.on('data', onData);
    stdin.resume();
  });
}

/**
 * The new password for add/passwd: from stdin's first line with `fromStdin`, else prompted twice
 * on a terminal. Refuses an empty password, a mismatch, and a non-terminal stdin without the flag.
 */
export async function readNewPassword(stdin: Readable, stderr: Writable, fromStdin: boolean): Promise<string> {
  let pw: string;
  if (fromStdin) {
    pw = await readFirstLine(stdin);
  } else {
    if (!isTerminal(stdin)) throw new PasswordInputError('stdin is not a terminal: pass --password-stdin and write the password as the first line of stdin');
    pw = await promptHidden(stdin, stderr, 'Password: ');
    if (pw.length > 0) {
      const again = await promptHidden(stdin, stderr, 'Retype password: ');
      if (again !== pw) throw new PasswordInputError('the passwords do not match');
    }
  }
  if (pw.length === 0) throw new PasswordInputError('the password is empty');
  return pw;
}
