// ManageSieve framing (RFC 5804 §4): turns the client's byte stream into complete commands.
// A command is a line ended by CRLF, except that a line ending in a literal marker, "{n+}"
// (non-synchronizing) or "{n}", is followed by exactly n octets and then the rest of the command
// line. The framer only finds these boundaries; parser.ts reads the tokens inside them. Bare LF is
// accepted as a line end, as most servers do.
//
// Contract: push() is synchronous and returns every frame completed by the chunk, in order. A
// fatal error frame is the last one ever returned: the framer ignores later input and the session
// ends the connection with BYE. Limits (limits.ts): MAX_LINE for the text of one command,
// MAX_LITERAL for its literals together; a literal beyond that but within MAX_LITERAL_DISCARD is
// read and dropped, so the session stays in step and can answer NO (QUOTA/MAXSIZE).
import { MAX_LINE, MAX_LITERAL, MAX_LITERAL_DISCARD } from './limits.js';

export type Part = { kind: 'text'; text: Buffer } | { kind: 'literal'; data: Buffer };

export type FrameError = 'line-too-long' | 'literal-too-large';

export type Frame = { kind: 'command'; parts: Part[] } | { kind: 'error'; reason: FrameError; fatal: boolean };

export interface FramerLimits {
  maxLine: number;
  maxLiteral: number;
  maxLiteralDiscard: number;
}

const LF = 0x0a;
const CR = 0x0d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const MARKER = /\{(\d+)(\+?)\}$/;

/**
 * The literal a line announces at its end, outside any quoted string; null when there is none.
 * `size` is Infinity when the number does not fit in 32 bits (RFC 5804 §4 number).
 */
export function literalMarker(line: Buffer): { size: number; sync: boolean } | null {
  const tail = line.subarray(Math.max(0, line.length - 16)).toString('latin1');
  const m = MARKER.exec(tail);
  if (!m) return null;
  const start = line.length - m[0].length;
  let quoted = false;
  for (let i = 0; i < start; i++) {
    const c = line[i];
    if (quoted && c === BACKSLASH) i++;
    else if (c === DQUOTE) quoted = !quoted;
  }
  if (quoted) return null;
  const size = m[1]!.length > 10 ? Infinity : Number(m[1]);
  return { size: size > 0xffffffff ? Infinity : size, sync: m[2] !== '+' };
}

export class CommandFramer {
  private buf: Buffer = Buffer.alloc(0);
  private parts: Part[] = [];
  /** Octets of command text so far (literals excluded). */
  private lineBytes = 0;
  private literalBytes = 0;
  /** Octets still to read into the literal (or to drop, when `dropping`). */
  private remaining = 0;
  private literal: Buffer[] = [];
  private dropping = false;
  /** A literal of this command was dropped: the command ends as a literal-too-large error. */
  private oversize = false;
  private dead = false;
  private readonly limits: FramerLimits;

  constructor(limits: Partial<FramerLimits> = {}) {
    this.limits = { maxLine: MAX_LINE, maxLiteral: MAX_LITERAL, maxLiteralDiscard: MAX_LITERAL_DISCARD, ...limits };
  }

  /** Octets received that belong to no completed frame yet (STARTTLS throws them away). */
  get pending(): number {
    return this.buf.length + this.lineBytes + this.literalBytes;
  }

  /** Forgets everything buffered (after STARTTLS, RFC 5804 §2.2: nothing sent in clear is kept). */
  reset(): void {
    this.buf = Buffer.alloc(0);
    this.startCommand();
    this.remaining = 0;
    this.literal = [];
    this.dropping = false;
  }

  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    if (this.dead) return out;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length > 0 && !this.dead) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, this.buf.length);
        if (!this.dropping) this.literal.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        this.remaining -= n;
        if (this.remaining === 0) this.endLiteral();
        continue;
      }
      const nl = this.buf.indexOf(LF);
      if (nl < 0) {
        if (this.lineBytes + this.buf.length > this.limits.maxLine) out.push(this.fatal('line-too-long'));
        break;
      }
      let line = this.buf.subarray(0, nl);
      this.buf = this.buf.subarray(nl + 1);
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      this.lineBytes += line.length;
      if (this.lineBytes > this.limits.maxLine) {
        out.push(this.fatal('line-too-long'));
        break;
      }
      // Copy: the chunk's memory is not ours to keep.
      this.parts.push({ kind: 'text', text: Buffer.from(line) });
      const marker = literalMarker(line);
      if (marker === null) {
        out.push(this.oversize ? { kind: 'error', reason: 'literal-too-large', fatal: false } : { kind: 'command', parts: this.parts });
        this.startCommand();
        continue;
      }
      if (marker.size > this.limits.maxLiteralDiscard) {
        out.push(this.fatal('literal-too-large'));
        break;
      }
      this.literalBytes += marker.size;
      this.dropping = this.oversize || this.literalBytes > this.limits.maxLiteral;
      if (this.dropping) this.oversize = true;
      this.remaining = marker.size;
      if (this.remaining === 0) this.endLiteral();
    }
    return out;
  }

  private endLiteral(): void {
    if (!this.dropping) this.parts.push({ kind: 'literal', data: Buffer.concat(this.literal) });
    this.literal = [];
    this.dropping = false;
  }

  private startCommand(): void {
    this.parts = [];
    this.lineBytes = 0;
    this.literalBytes = 0;
    this.oversize = false;
  }

  private fatal(reason: FrameError): Frame {
    this.dead = true;
    this.buf = Buffer.alloc(0);
    return { kind: 'error', reason, fatal: true };
  }
}
