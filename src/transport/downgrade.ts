// 8-bit to 7-bit conversion for a next hop that does not offer 8BITMIME (RFC 6152 §3: a server
// relaying an 8-bit message to such a host converts it to 7 bit "per RFC 2045", or returns it).
//
//   - every MIME entity is walked: multipart/* part by part (RFC 2046 §5.1, delimiters and the
//     preamble/epilogue kept byte for byte), message/rfc822 into its own header and body;
//   - a leaf whose body has 8-bit octets and is labelled 7bit, 8bit, binary or not labelled at
//     all is re-encoded: text/* (and a body without Content-Type, text/plain by RFC 2045 §5.2)
//     as quoted-printable (RFC 2045 §6.7, CRLF line ends kept as hard line breaks), anything
//     else as base64 (RFC 2045 §6.8); its Content-Transfer-Encoding field is replaced;
//   - a multipart or message/rfc822 entity labelled 8bit or binary is relabelled 7bit once its
//     content is (RFC 2045 §6.4: a composite's encoding is that of its parts);
//   - a top-level body without MIME fields gets MIME-Version and
//     `Content-Type: text/plain; charset=unknown-8bit` (RFC 1428 §3), its charset being unknown.
// Impossible, so the caller returns the message (554 5.6.3): an 8-bit octet in any header
// field (RFC 6152 allows none; only SMTPUTF8 would), in a multipart preamble or epilogue, or in
// a body already labelled quoted-printable or base64 (that would be a broken message).
//
// DKIM: a signature made over the 8-bit form no longer verifies after this conversion (the body
// hash of RFC 6376 §3.7 covers the encoded bytes). RFC 6376 §5.3 asks signers to convert to
// 7 bit before signing for this reason; when Postern signs outbound mail, it must sign the
// bytes that leave, i.e. after this step.
//
// Config keys: none.

export type DowngradeResult = { ok: true; message: Buffer } | { ok: false; reason: string };

class CannotDowngrade extends Error {}

const CRLF = '\r\n';
const MAX_DEPTH = 50;

/** The message in 7 bit, or why it cannot be converted. Works on the bytes (latin1 strings). */
export function downgradeTo7bit(message: Buffer): DowngradeResult {
  try {
    const out = entity(message.toString('latin1'), { top: true, depth: 0, defaultType: 'text/plain' });
    return { ok: true, message: Buffer.from(out, 'latin1') };
  } catch (e) {
    if (e instanceof CannotDowngrade) return { ok: false, reason: e.message };
    throw e;
  }
}

const has8bit = (s: string) => /[\x80-\xff]/.test(s);

interface Ctx {
  top: boolean;
  depth: number;
  /** multipart/digest parts default to message/rfc822 (RFC 2046 §5.1.5). */
  defaultType: string;
}

/** Converts one entity (header block, blank line, body). */
function entity(text: string, ctx: Ctx): string {
  if (ctx.depth > MAX_DEPTH) throw new CannotDowngrade('MIME structure nested too deeply');
  const split = splitHeader(text);
  if (has8bit(split.header)) throw new CannotDowngrade('8-bit octets in a header field');
  if (!has8bit(split.body)) return text;
  const fields = parseFields(split.header);
  const ctRaw = field(fields, 'content-type');
  const ct = ctRaw ? contentType(ctRaw) : { type: ctx.defaultType, params: new Map<string, string>() };
  const cte = (field(fields, 'content-transfer-encoding') ?? '7bit').trim().toLowerCase();

  if (ct.type.startsWith('multipart/')) {
    const boundary = ct.params.get('boundary');
    if (!boundary) throw new CannotDowngrade('multipart entity without a boundary');
    const body = multipart(split.body, boundary, ct.type === 'multipart/digest' ? 'message/rfc822' : 'text/plain', ctx.depth);
    return join(relabel(split.header, cte, '7bit'), split.sep, body);
  }
  if (ct.type === 'message/rfc822') {
    const body = entity(split.body, { top: false, depth: ctx.depth + 1, defaultType: 'text/plain' });
    return join(relabel(split.header, cte, '7bit'), split.sep, body);
  }
  if (cte === 'quoted-printable' || cte === 'base64') throw new CannotDowngrade(`8-bit octets in a body labelled ${cte}`);
  if (!['7bit', '8bit', 'binary'].includes(cte)) throw new CannotDowngrade(`unknown Content-Transfer-Encoding ${cte}`);
  if (ct.type.startsWith('message/')) throw new CannotDowngrade(`8-bit ${ct.type} cannot be re-encoded (RFC 2046 §5.2)`);

  const bytes = Buffer.from(split.body, 'latin1');
  const isText = ct.type.startsWith('text/');
  let header = setField(split.header, 'Content-Transfer-Encoding', isText ? 'quoted-printable' : 'base64');
  if (ctx.top && !ctRaw && !field(fields, 'mime-version')) {
    // A plain RFC 5322 message with 8-bit text: say what we now send (RFC 1428 §3).
    header = `${header}MIME-Version: 1.0${CRLF}Content-Type: text/plain; charset=unknown-8bit${CRLF}`;
  }
  return join(header, split.sep || CRLF, isText ? encodeQuotedPrintable(bytes) : encodeBase64(bytes));
}

function join(header: string, sep: string, body: string): string {
  return header + sep + body;
}

/** Header block (each line with its CRLF), the blank line, and the body. */
function splitHeader(text: string): { header: string; sep: string; body: string } {
  if (text.startsWith(CRLF)) return { header: '', sep: CRLF, body: text.slice(2) };
  const i = text.indexOf(CRLF + CRLF);
  if (i < 0) return { header: text.endsWith(CRLF) ? text : text + CRLF, sep: '', body: '' };
  return { header: text.slice(0, i + 2), sep: CRLF, body: text.slice(i + 4) };
}

/** Unfolded fields (RFC 5322 §2.2.3), names lower-cased. */
function parseFields(header: string): { name: string; value: string }[] {
  const out: { name: string; value: string }[] = [];
  for (const line of header.split(CRLF)) {
    if (!line) continue;
    if (/^[ \t]/.test(line) && out.length) out[out.length - 1]!.value += ' ' + line.trim();
    else {
      const c = line.indexOf(':');
      if (c > 0) out.push({ name: line.slice(0, c).trim().toLowerCase(), value: line.slice(c + 1).trim() });
    }
  }
  return out;
}

function field(fields: { name: string; value: string }[], name: string): string | undefined {
  return fields.find((f) => f.name === name)?.value;
}

/** type/subtype (lower case) and parameters (RFC 2045 §5.1; quoted strings unquoted). */
function contentType(value: string): { type: string; params: Map<string, string> } {
  const [typePart = '', ...rest] = splitParams(value);
  const params = new Map<string, string>();
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq < 0) continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    params.set(p.slice(0, eq).trim().toLowerCase(), v);
  }
  const type = typePart.trim().toLowerCase();
  return { type: /^[^/\s]+\/[^/\s]+$/.test(type) ? type : 'text/plain', params };
}

/** Splits at ';' outside quoted strings. */
function splitParams(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (quoted && c === '\\') {
      cur += c + (value[++i] ?? '');
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ';' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Replaces every Content-Transfer-Encoding field (with its folded lines) by one new one. */
function setField(header: string, name: string, value: string): string {
  const lines = header.split(CRLF);
  const kept: string[] = [];
  let dropping = false;
  const lname = name.toLowerCase() + ':';
  for (const line of lines) {
    if (dropping && /^[ \t]/.test(line)) continue;
    dropping = line.toLowerCase().replace(/^([^:]*?)\s*:/, '$1:').startsWith(lname);
    if (!dropping) kept.push(line);
  }
  // `header` ends with CRLF, so the last element is '': the new field goes before it.
  const body = kept.filter((l, i) => l !== '' || i !== kept.length - 1);
  return [...body, `${name}: ${value}`, ''].join(CRLF);
}

/** A composite labelled 8bit/binary becomes 7bit once its parts are (RFC 2045 §6.4). */
function relabel(header: string, cte: string, to: string): string {
  return cte === '8bit' || cte === 'binary' ? setField(header, 'Content-Transfer-Encoding', to) : header;
}

/** Converts each body part between the delimiter lines of `boundary` (RFC 2046 §5.1.1). */
function multipart(body: string, boundary: string, defaultType: string, depth: number): string {
  const dash = '--' + boundary;
  // Delimiter lines: at the very start, or after a CRLF (which belongs to the delimiter).
  const re = new RegExp(`(^|\\r\\n)(${escapeRe(dash)})(--)?[ \\t]*(?=\\r\\n|$)`, 'g');
  const delims: { start: number; end: number; close: boolean }[] = [];
  for (let m = re.exec(body); m; m = re.exec(body)) {
    delims.push({ start: m.index, end: m.index + m[0].length, close: !!m[3] });
    if (m[3]) break;
  }
  if (delims.length === 0) throw new CannotDowngrade('multipart body without its boundary');
  const preamble = body.slice(0, delims[0]!.start);
  const last = delims[delims.length - 1]!;
  const epilogue = body.slice(last.end);
  if (has8bit(preamble) || has8bit(epilogue)) throw new CannotDowngrade('8-bit octets in a multipart preamble or epilogue');
  let out = preamble;
  for (let i = 0; i < delims.length; i++) {
    const d = delims[i]!;
    out += body.slice(d.start, d.end);
    if (d.close || i === delims.length - 1) break;
    // The part runs from the CRLF after this delimiter line to the next delimiter.
    const next = delims[i + 1]!;
    const partStart = body.startsWith(CRLF, d.end) ? d.end + 2 : d.end;
    const part = body.slice(partStart, next.start);
    out += body.slice(d.end, partStart) + entity(part, { top: false, depth: depth + 1, defaultType });
  }
  return out + epilogue;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Quoted-printable (RFC 2045 §6.7): CRLF stays a hard line break; '=', controls, 8-bit octets,
 * bare CR or LF, and a space or tab at the end of a line are encoded; lines are at most 76
 * characters, using soft line breaks ("=" CRLF).
 */
export function encodeQuotedPrintable(bytes: Buffer): string {
  const lines: string[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i === bytes.length || (bytes[i] === 0x0d && bytes[i + 1] === 0x0a)) {
      lines.push(encodeQpLine(bytes.subarray(start, i)));
      start = i + 2;
      i++;
    }
  }
  return lines.join(CRLF);
}

function encodeQpLine(line: Buffer): string {
  const tokens: string[] = [];
  for (let i = 0; i < line.length; i++) {
    const b = line[i]!;
    const last = i === line.length - 1;
    const literal = (b >= 33 && b <= 126 && b !== 0x3d) || ((b === 0x20 || b === 0x09) && !last);
    tokens.push(literal ? String.fromCharCode(b) : '=' + b.toString(16).toUpperCase().padStart(2, '0'));
  }
  let out = '';
  let cur = '';
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const isLast = i === tokens.length - 1;
    // 76 characters per line: 75 plus the "=" of a soft break, or 76 for the line's end.
    if (cur.length + t.length > (isLast ? 76 : 75)) {
      out += cur + '=' + CRLF;
      cur = '';
    }
    cur += t;
  }
  return out + cur;
}

/** Base64 (RFC 2045 §6.8) in lines of 76 characters. */
export function encodeBase64(bytes: Buffer): string {
  const b64 = bytes.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines.join(CRLF) + (lines.length ? CRLF : '');
}
