// One ManageSieve session (RFC 5804), without I/O: it takes framed commands (framing.ts) and
// returns the bytes to write and what the connection does next. server.ts owns the socket.
//
// States (RFC 5804 §1.2, §2.1, §2.3): notAuthenticated → (AUTHENTICATE) authenticated →
// (LOGOUT or BYE) logout; UNAUTHENTICATE (§2.14) goes back. The dispatcher checks, in order:
// a pending SASL exchange, syntax, the command's state, its TLS rule, its arguments; then it runs
// the handler and turns whatever it threw into NO or BYE here, in one place. Unknown or malformed
// commands count towards MAX_BAD_COMMANDS, then BYE.
import type { Logger } from '../log/logger.js';
import { logEvent } from '../log/logger.js';
import type { Directory } from '../directory/directory.js';
import type { CompileResult } from '../sieve/compile.js';
import { checkArgs, commandTable, type CommandSpec, type Reply } from './commands.js';
import type { Frame } from './framing.js';
import { MAX_BAD_COMMANDS } from './limits.js';
import { parseCommand, parseContinuation, ParseError } from './parser.js';
import { encodeString, ManageSieveReply, Replies, statusLine } from './replies.js';
import { ScriptError, type ScriptRepository } from './repository.js';

export type SessionState = { kind: 'notAuthenticated'; authFailures: number } | { kind: 'authenticated'; user: string } | { kind: 'logout' };

export interface SessionDeps {
  repo: ScriptRepository;
  directory: Pick<Directory, 'authenticate'>;
  compile(text: string): CompileResult;
  /** RFC 5804 §1.7 IMPLEMENTATION. */
  implementation: string;
  /** RFC 5804 §1.7 SIEVE: the engine's extension names. */
  sieveExtensions: string[];
  /** RFC 5804 §1.7 MAXREDIRECTS (config `sieve.limits.max_redirects`). */
  maxRedirects: number;
  authFailureDelayMs: number;
}

export interface Output {
  /** Bytes to write (UTF-8), CRLFs included. */
  wire: string;
  after?: 'starttls' | 'close';
}

export class ManageSieveSession {
  state: SessionState = { kind: 'notAuthenticated', authFailures: 0 };
  private badCommands = 0;
  private pending: ((response: Buffer) => Promise<Reply>) | null = null;

  constructor(
    readonly deps: SessionDeps,
    /** True once TLS is up (STARTTLS done, or an implicit-TLS connection). */
    public tls: boolean,
    readonly log: Logger,
  ) {}

  /** RFC 5804 §1.7: the capability lines for the current state, without CRLFs. */
  capabilities(): string[] {
    const d = this.deps;
    const lines = [
      `"IMPLEMENTATION" ${encodeString(d.implementation)}`,
      // §1.7: the SASL list may be empty only when STARTTLS is offered; PLAIN waits for TLS.
      `"SASL" ${encodeString(this.tls ? 'PLAIN' : '')}`,
      `"SIEVE" ${encodeString(d.sieveExtensions.join(' '))}`,
    ];
    if (!this.tls) lines.push('"STARTTLS"');
    lines.push(`"MAXREDIRECTS" "${d.maxRedirects}"`, '"UNAUTHENTICATE"', '"VERSION" "1.0"');
    if (this.state.kind === 'authenticated') lines.push(`"OWNER" ${encodeString(this.state.user)}`);
    return lines;
  }

  /** The greeting (RFC 5804 §1.7): the capabilities, then OK. */
  greeting(): string {
    return this.capabilities().join('\r\n') + '\r\n' + statusLine('OK', 'Postern ManageSieve ready');
  }

  /** After a STARTTLS handshake the server speaks first, with the capabilities (RFC 5804 §2.2). */
  startedTls(): string {
    this.tls = true;
    return this.greeting();
  }

  async handle(frame: Frame): Promise<Output> {
    try {
      return this.encode(await this.dispatch(frame));
    } catch (e) {
      const reply = this.toReply(e);
      if (reply.kind === 'BYE') this.state = { kind: 'logout' };
      return { wire: reply.toWire(), ...(reply.kind === 'BYE' ? { after: 'close' as const } : {}) };
    }
  }

  private async dispatch(frame: Frame): Promise<Reply> {
    const pending = this.pending;
    this.pending = null;
    if (frame.kind === 'error') {
      if (frame.reason === 'line-too-long') throw Replies.lineTooLong();
      throw frame.fatal ? Replies.literalWayTooLarge() : Replies.literalTooLarge();
    }
    if (pending) {
      const response = parseContinuation(frame.parts);
      // RFC 5804 §2.1: a client cancels the exchange with "*".
      if (response.toString('latin1') === '*') throw Replies.authCancelled();
      return pending(response);
    }
    let cmd;
    try {
      cmd = parseCommand(frame.parts);
    } catch (e) {
      throw this.bad(e instanceof ParseError ? Replies.syntax(e.message) : e);
    }
    const spec = (commandTable as Record<string, CommandSpec>)[cmd.name];
    if (!spec) throw this.bad(Replies.unknownCommand());
    if (!spec.states.includes(this.state.kind)) throw Replies.wrongState(this.state.kind === 'authenticated');
    if (spec.tls === 'required' && !this.tls) throw Replies.encryptNeeded();
    if (spec.tls === 'forbidden' && this.tls) throw Replies.tlsActive();
    let args;
    try {
      args = checkArgs(spec, cmd.args);
    } catch (e) {
      throw this.bad(e instanceof ParseError ? Replies.syntax(e.message) : e);
    }
    return spec.run(this, args);
  }

  private encode(reply: Reply): Output {
    if (reply.challenge) {
      this.pending = reply.challenge.next;
      return { wire: encodeString(reply.challenge.data) + '\r\n' };
    }
    const data = (reply.data ?? []).map((l) => l + '\r\n').join('');
    return { wire: data + statusLine('OK', reply.text, reply.code), ...(reply.after ? { after: reply.after } : {}) };
  }

  /** Counts a malformed or unknown command; past the limit the answer becomes BYE. */
  private bad(reply: unknown): unknown {
    if (++this.badCommands >= MAX_BAD_COMMANDS) return Replies.tooManyBadCommands();
    return reply;
  }

  private toReply(e: unknown): ManageSieveReply {
    if (e instanceof ManageSieveReply) {
      if (!e.opts.userError) logEvent(this.log, 'error', 'managesieve.error', { err: e.opts.cause ?? e }, e.text);
      return e;
    }
    if (e instanceof ParseError) return Replies.syntax(e.message);
    if (e instanceof ScriptError) {
      switch (e.code) {
        case 'nonexistent':
          return Replies.nonexistent();
        case 'already-exists':
          return Replies.alreadyExists();
        case 'active':
          return Replies.active();
        case 'quota-size':
          return Replies.quotaSize(e.message);
        case 'quota-count':
          return Replies.quotaCount(e.message);
        case 'invalid-name':
          return Replies.invalidName(e.message);
      }
    }
    // A store failure or a bug: the client may try again; the cause goes to the log only.
    const reply = Replies.tryLater(e);
    logEvent(this.log, 'error', 'managesieve.error', { err: e }, 'command failed');
    return reply;
  }
}
