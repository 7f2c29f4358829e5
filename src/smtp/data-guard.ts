// Strict DATA content checks, as a transform between smtp-server's DATA stream and our buffer.
//
// Framing stays in smtp-server's SMTPStream (smtp-stream.js): it ends DATA only on
// <CRLF>.<CRLF> (or "." + CRLF as the very first line), and dot-unstuffs. So <LF>.<LF>,
// <CR>.<CR>, <LF>.<CRLF> and <CRLF>.<LF> never end a message there, and the bytes after them
// stay message content: a smuggled second transaction cannot become a second message (SMTP
// smuggling). This guard then refuses what lets such payloads through on the NEXT hop:
//
//   bare CR / bare LF  RFC 5321 §2.3.8: only CRLF ends a line. smtp.bare_newline = reject (default):
//                      the message is refused (550 5.6.11) after the real end of DATA; normalize:
//                      each bare CR or LF becomes CRLF.
//   NUL                RFC 5321 §4.5.2 / RFC 5322 §2.3: not allowed in text; refused (554 5.6.0).
//   line length        RFC 5321 §4.5.3.1.6 (1000 with CRLF at least); over smtp.max_line_length
//                      (CRLF excluded): refused with 552 5.3.4.
//   size               RFC 1870 §6.3: over smtp.max_message_size, 552 5.3.4.
//
// The guard never errors the stream: the client must be allowed to finish sending, and only then
// hear the reply (RFC 5321 §4.1.1.4). After the first violation it stops passing bytes on (so
// nothing is buffered needlessly) and keeps counting. Config keys (passed in): smtp.bare_newline,
// smtp.max_line_length, smtp.max_message_size.
import { Transform, type TransformCallback } from 'node:stream';

export type DataViolation = 'too-big' | 'bare-newline' | 'nul' | 'line-too-long';

export interface DataGuardOptions {
  bareNewline: 'reject' | 'normalize';
  maxLineLength: number;
  maxBytes: number;
}

const CR = 0x0d;
const LF = 0x0a;
const CR_BYTE = Buffer.from([CR]);

export class DataGuard extends Transform {
  /** Octets received (after dot-unstuffing, before any normalisation). */
  bytes = 0;
  /** Octets passed on. */
  outBytes = 0;
  violation: DataViolation | null = null;
  private pendingCR = false;
  private lineLen = 0;

  constructor(private readonly opts: DataGuardOptions) {
    super();
  }

  private flag(v: DataViolation): void {
    if (!this.violation) this.violation = v;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.opts.maxBytes) this.flag('too-big');
    if (this.violation) return done();
    // Nearly all mail is clean CRLF text: check it with indexOf and pass the chunk on uncopied.
    // Anything unusual (bare CR or LF, NUL, a long line) takes the byte-by-byte path, which
    // starts from the same state because the fast path commits nothing until it succeeds.
    const hadPendingCR = this.pendingCR;
    if (this.isClean(chunk)) {
      // Both paths hold back a CR that ends a chunk until its LF arrives, so the output never
      // depends on which path saw which chunk.
      if (hadPendingCR) this.pushOut(CR_BYTE);
      this.pushOut(this.pendingCR ? chunk.subarray(0, chunk.length - 1) : chunk);
    } else {
      this.scanBytes(chunk);
    }
    done();
  }

  private pushOut(b: Buffer): void {
    if (b.length === 0) return;
    this.outBytes += b.length;
    this.push(b);
  }

  /** True (and line state advanced) when `chunk` holds only CRLF line ends, no NUL, no long line. */
  private isClean(chunk: Buffer): boolean {
    if (chunk.indexOf(0) !== -1) return false;
    const max = this.opts.maxLineLength;
    let pos = 0;
    let lineLen = this.lineLen;
    if (this.pendingCR) {
      if (chunk[0] !== LF) return false;
      pos = 1;
      lineLen = 0;
    }
    let pendingCR = false;
    for (;;) {
      const lf = chunk.indexOf(LF, pos);
      const cr = chunk.indexOf(CR, pos);
      if (lf === -1) {
        // No more line ends here; a CR may only be the chunk's last byte (its LF comes next).
        if (cr !== -1 && cr !== chunk.length - 1) return false;
        lineLen += (cr === -1 ? chunk.length : cr) - pos;
        if (lineLen > max) return false;
        pendingCR = cr !== -1;
        break;
      }
      // The first CR from here must be the one right before this LF.
      if (lf === pos || cr !== lf - 1) return false;
      lineLen += lf - 1 - pos;
      if (lineLen > max) return false;
      lineLen = 0;
      pos = lf + 1;
    }
    this.lineLen = lineLen;
    this.pendingCR = pendingCR;
    return true;
  }

  private scanBytes(chunk: Buffer): void {
    const normalize = this.opts.bareNewline === 'normalize';
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    const newline = () => {
      out[o++] = CR;
      out[o++] = LF;
      this.lineLen = 0;
    };
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (this.pendingCR) {
        this.pendingCR = false;
        if (b === LF) {
          newline();
          continue;
        }
        if (normalize) newline();
        else this.flag('bare-newline');
      }
      if (b === CR) {
        this.pendingCR = true;
        continue;
      }
      if (b === LF) {
        if (normalize) newline();
        else this.flag('bare-newline');
        continue;
      }
      if (b === 0) this.flag('nul');
      if (++this.lineLen > this.opts.maxLineLength) this.flag('line-too-long');
      out[o++] = b;
    }
    if (!this.violation && o > 0) {
      this.outBytes += o;
      this.push(out.subarray(0, o));
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCR) {
      this.pendingCR = false;
      if (this.opts.bareNewline === 'normalize') {
        if (!this.violation) {
          this.outBytes += 2;
          this.push(Buffer.from('\r\n'));
        }
      } else this.flag('bare-newline');
    }
    done();
  }
}
