// The spamd protocol, client side (SpamAssassin's spamd/PROTOCOL, version SPAMC/1.5):
//
//   request:  <COMMAND> SPAMC/1.5\r\n  Content-length: <octets>\r\n  [User: <name>\r\n]  \r\n  <message>
//   response: SPAMD/1.1 <code> <text>\r\n  Spam: <True|False> ; <score> / <required>\r\n
//             [Content-length: <octets>\r\n]  \r\n  [<body>]
//
// Commands used: CHECK (no body), SYMBOLS (body: comma-separated rule names), REPORT (body: the
// report text), PROCESS (body: the message with SpamAssassin's headers). A code other than 0
// (EX_OK) is an error (spamd uses sysexits: 64 EX_USAGE, 74 EX_IOERR, 76 EX_PROTOCOL, …).
// The message is written in chunks as the socket drains, then our side is closed; spamd closes
// after its answer.
import { exchange, ScannerUnavailable, type Endpoint } from '../../src/pipeline/scanner/connection.js';

export type SpamdCommand = 'CHECK' | 'SYMBOLS' | 'REPORT' | 'PROCESS';

export interface SpamdResult {
  spam: boolean;
  score: number;
  required: number;
  /** SYMBOLS: the rule names; REPORT: those of the report table; otherwise []. */
  symbols: string[];
  /** REPORT: the report text. */
  report?: string;
  /** PROCESS: the message as SpamAssassin returned it. */
  message?: Buffer;
}

const WRITE_CHUNK = 64 * 1024;

export async function spamdRequest(
  endpoint: Endpoint,
  command: SpamdCommand,
  message: Buffer,
  opts: { user?: string; connectTimeoutMs: number; signal: AbortSignal },
): Promise<SpamdResult> {
  const head = `${command} SPAMC/1.5\r\nContent-length: ${message.length}\r\n${opts.user ? `User: ${opts.user}\r\n` : ''}\r\n`;
  const reply = await exchange(endpoint, {
    scanner: 'spamd',
    connectTimeoutMs: opts.connectTimeoutMs,
    signal: opts.signal,
    async send(write, end) {
      await write(head);
      for (let off = 0; off < message.length; off += WRITE_CHUNK) await write(message.subarray(off, off + WRITE_CHUNK));
      end();
    },
  });
  return parseSpamdReply(command, reply);
}

/** Thrown for a reply that is not a well-formed EX_OK answer. */
export class SpamdProtocolError extends ScannerUnavailable {
  constructor(message: string) {
    super('spamd', message);
    this.name = 'SpamdProtocolError';
  }
}

export function parseSpamdReply(command: SpamdCommand, reply: Buffer): SpamdResult {
  const sep = reply.indexOf('\r\n\r\n');
  const headText = (sep < 0 ? reply : reply.subarray(0, sep)).toString('latin1');
  const body = sep < 0 ? Buffer.alloc(0) : reply.subarray(sep + 4);
  const [status = '', ...lines] = headText.split('\r\n');
  const st = /^SPAMD\/(\d+\.\d+) (\d+) (.*)$/.exec(status);
  if (!st) throw new SpamdProtocolError(`not a spamd reply: ${JSON.stringify(status.slice(0, 80))}`);
  if (st[2] !== '0') throw new SpamdProtocolError(`spamd error ${st[2]}: ${st[3]}`);
  const headers = new Map<string, string>();
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
  }
  const spamHeader = headers.get('spam');
  const sm = spamHeader ? /^(True|False|Yes|No)\s*;\s*(-?\d+(?:\.\d+)?)\s*\/\s*(-?\d+(?:\.\d+)?)$/i.exec(spamHeader) : null;
  if (!sm) throw new SpamdProtocolError(`spamd reply without a valid Spam header: ${JSON.stringify(spamHeader ?? null)}`);
  const len = headers.get('content-length');
  if (len !== undefined && Number(len) !== body.length) throw new SpamdProtocolError(`spamd reply cut short: ${body.length} of ${len} octets`);
  const result: SpamdResult = { spam: /^(true|yes)$/i.test(sm[1]!), score: Number(sm[2]), required: Number(sm[3]), symbols: [] };
  const text = body.toString('utf8');
  if (command === 'SYMBOLS') result.symbols = text.trim().split(/\s*,\s*/).filter(Boolean);
  if (command === 'REPORT') {
    result.report = text.replace(/\s+$/, '');
    // The report's table rows: " 0.3 MSGID_SHORT   Message-ID is unusually short".
    result.symbols = [...text.matchAll(/^\s*-?\d+(?:\.\d+)?\s+([A-Z0-9_]+)\s/gm)].map((m) => m[1]!);
  }
  if (command === 'PROCESS') result.message = body;
  return result;
}
