// The message as Sieve sees it, parsed without I/O and synchronously: header fields (RFC 5322
// §2.2, unfolded per §2.2.3), RFC 2047 encoded-words decoded for header tests (RFC 5228 §2.7.2),
// address lists with groups, display names and comments for the address test (RFC 5322 §3.4,
// RFC 5228 §5.1), and MIME parts (RFC 2045/2046) for body (RFC 5173), mime and foreverypart
// (RFC 5703). Header fields are mutable for editheader (RFC 5293); the body never changes.

export interface HeaderField {
  /** Field name as written. */
  name: string;
  /** Raw value after the colon, folding kept, without the final CRLF. */
  raw: string;
}

export interface MimePart {
  headers: HeaderField[];
  /** Lower-cased "type/subtype"; defaults per RFC 2045 §5.2 (message/rfc822 parts excepted). */
  contentType: string;
  params: Record<string, string>;
  /** Raw (still transfer-encoded) body of this part. */
  rawBody: Buffer;
  children: MimePart[];
  parent: MimePart | null;
  depth: number;
  /** RFC 5703 replace: this part (or one below it) was replaced, so its bytes are rebuilt. */
  edited?: boolean;
  /** RFC 5703 replace: the part was inside a replaced one and is no longer in the message. */
  detached?: boolean;
  /** On the root: how many replacements the tree has had (lets per-tree caches notice). */
  edits?: number;
}

/** Splits a raw message into its header fields and body (at the first empty line). */
export function splitMessage(raw: Buffer): { headers: HeaderField[]; body: Buffer } {
  if (raw[0] === 10 || (raw[0] === 13 && raw[1] === 10)) {
    // Starts with an empty line: no header at all.
    return { headers: [], body: raw.subarray(raw[0] === 13 ? 2 : 1) };
  }
  let end = -1;
  let bodyStart = raw.length;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 10) {
      if (raw[i + 1] === 10) {
        end = i + 1;
        bodyStart = i + 2;
        break;
      }
      if (raw[i + 1] === 13 && raw[i + 2] === 10) {
        end = i + 1;
        bodyStart = i + 3;
        break;
      }
    }
  }
  const head = raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
  return { headers: parseHeaderBlock(head), body: raw.subarray(Math.min(bodyStart, raw.length)) };
}

export function parseHeaderBlock(head: string): HeaderField[] {
  const out: HeaderField[] = [];
  const lines = head.split(/\r?\n/);
  for (const line of lines) {
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && out.length > 0) {
      out[out.length - 1]!.raw += '\r\n' + line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue; // not a header field; ignored
    out.push({ name: line.slice(0, colon).trimEnd(), raw: line.slice(colon + 1) });
  }
  return out;
}

/** RFC 5322 §2.2.3 unfolding, then leading and trailing whitespace removed. */
export function unfold(raw: string): string {
  return raw.replace(/\r?\n(?=[ \t])/g, '').trim();
}

function decodeCharset(bytes: Buffer, charset: string): string {
  const cs = charset.toLowerCase().replace(/\*.*$/, ''); // RFC 2231 language suffix
  try {
    return new TextDecoder(cs === 'us-ascii' ? 'utf-8' : cs).decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

function decodeQ(s: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '_') bytes.push(32);
    else if (c === '=' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(c.charCodeAt(0) & 0xff);
  }
  return Buffer.from(bytes);
}

/** Decodes RFC 2047 encoded-words; whitespace between adjacent encoded-words is dropped (§6.2). */
export function decodeMimeWords(s: string): string {
  if (!s.includes('=?')) return s;
  const re = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;
  let out = '';
  let last = 0;
  let prevEncoded = false;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const between = s.slice(last, m.index);
    if (!(prevEncoded && /^[ \t\r\n]*$/.test(between))) out += between;
    const bytes = m[2]!.toLowerCase() === 'b' ? Buffer.from(m[3]!, 'base64') : decodeQ(m[3]!);
    out += decodeCharset(bytes, m[1]!);
    last = m.index + m[0].length;
    prevEncoded = true;
  }
  return out + s.slice(last);
}

/** Header value as the header test compares it (RFC 5228 §5.7): unfolded, trimmed, decoded. */
export function headerValue(f: HeaderField): string {
  // Fields are never changed in place, so a field's decoded value can be remembered.
  let v = decodedValues.get(f);
  if (v === undefined) {
    v = decodeMimeWords(unfold(f.raw));
    decodedValues.set(f, v);
  }
  return v;
}

const decodedValues = new WeakMap<HeaderField, string>();

export function headersNamed(fields: HeaderField[], name: string): HeaderField[] {
  const n = name.toLowerCase();
  return fields.filter((f) => f.name.toLowerCase() === n);
}

// ---- Addresses (RFC 5322 §3.4) ----

export interface MailAddress {
  /** The addr-spec ("local@domain"), or the raw text when it is not a valid address. */
  address: string;
  valid: boolean;
  name?: string;
}

/**
 * Parses an address-list leniently: mailboxes and groups (RFC 5322 §3.4; a group yields its
 * members, and an empty group yields nothing), display names, comments, quoted local parts.
 */
export function parseAddressList(value: string): MailAddress[] {
  const out: MailAddress[] = [];
  let i = 0;
  const s = value;
  let cur = ''; // text outside angle brackets, comments removed
  let angle: string | null = null;
  let inGroup = false;
  const flush = () => {
    const phrase = cur.trim();
    if (angle !== null) {
      const a = angle.trim();
      out.push({ address: a, valid: isAddrSpec(a), name: phrase.replace(/^"|"$/g, '') || undefined });
    } else if (phrase !== '') {
      const bare = phrase.replace(/("(?:[^"\\]|\\.)*")|\s+/g, (_m, quoted: string | undefined) => quoted ?? '');
      out.push({ address: bare, valid: isAddrSpec(bare) });
    }
    cur = '';
    angle = null;
  };
  while (i < s.length) {
    const c = s[i]!;
    if (c === '(') {
      // Comment, may nest (RFC 5322 §3.2.2).
      let depth = 0;
      for (; i < s.length; i++) {
        if (s[i] === '\\') i++;
        else if (s[i] === '(') depth++;
        else if (s[i] === ')' && --depth === 0) break;
      }
      i++;
      cur += ' ';
      continue;
    }
    if (c === '"') {
      let q = '"';
      for (i++; i < s.length && s[i] !== '"'; i++) {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        q += s[i];
      }
      q += '"';
      i++;
      if (angle !== null) angle += q;
      else cur += q;
      continue;
    }
    if (c === '<') {
      const close = s.indexOf('>', i);
      angle = s.slice(i + 1, close < 0 ? s.length : close);
      // RFC 5322 obs-route "@a,@b:user@dom" is dropped.
      angle = angle.replace(/^(@[^:]*:)/, '');
      i = close < 0 ? s.length : close + 1;
      continue;
    }
    if (c === ':' && angle === null && !inGroup) {
      // group "display-name:" — the name is not an address
      cur = '';
      inGroup = true;
      i++;
      continue;
    }
    if (c === ';' && inGroup) {
      flush();
      inGroup = false;
      i++;
      continue;
    }
    if (c === ',') {
      flush();
      i++;
      continue;
    }
    if (angle === null) cur += c;
    i++;
  }
  flush();
  return out.map((a) => ({ ...a, address: unquoteLocal(a.address) }));
}

function unquoteLocal(a: string): string {
  const m = /^"((?:[^"\\]|\\.)*)"(@.*)$/.exec(a);
  return m ? m[1]!.replace(/\\(.)/g, '$1') + m[2] : a;
}

function isAddrSpec(a: string): boolean {
  const at = a.lastIndexOf('@');
  return at > 0 && at < a.length - 1 && !/\s/.test(a.replace(/^"[^"]*"/, ''));
}

// ---- MIME (RFC 2045, RFC 2046) ----

export function parseContentType(value: string | undefined, parentType?: string): { type: string; params: Record<string, string> } {
  const dflt = parentType === 'multipart/digest' ? 'message/rfc822' : 'text/plain';
  if (value === undefined) return { type: dflt, params: dflt === 'text/plain' ? { charset: 'us-ascii' } : {} };
  const parts = splitParams(value);
  const type = (parts.shift() ?? '').trim().toLowerCase();
  const params: Record<string, string> = {};
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (eq < 0) continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    params[p.slice(0, eq).trim().toLowerCase()] = v;
  }
  return { type: /^[^/\s]+\/[^/\s]+$/.test(type) ? type : 'text/plain', params };
}

function splitParams(v: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '"') q = !q;
    if (c === '\\' && q) {
      cur += c + (v[++i] ?? '');
      continue;
    }
    if (c === ';' && !q) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function firstValue(headers: HeaderField[], name: string): string | undefined {
  const f = headersNamed(headers, name)[0];
  return f ? unfold(f.raw) : undefined;
}

export function buildMimeTree(headers: HeaderField[], body: Buffer, limits: { maxMimeParts: number; maxMimeDepth: number }): MimePart {
  let count = 0;
  const make = (hs: HeaderField[], b: Buffer, parent: MimePart | null, depth: number): MimePart => {
    count++;
    const ct = parseContentType(firstValue(hs, 'content-type'), parent?.contentType);
    const part: MimePart = { headers: hs, contentType: ct.type, params: ct.params, rawBody: b, children: [], parent, depth };
    if (depth >= limits.maxMimeDepth || count >= limits.maxMimeParts) return part;
    if (ct.type.startsWith('multipart/') && ct.params.boundary) {
      for (const sub of splitMultipart(b, ct.params.boundary)) {
        if (count >= limits.maxMimeParts) break;
        const s = splitMessage(sub);
        part.children.push(make(s.headers, s.body, part, depth + 1));
      }
    } else if (ct.type === 'message/rfc822') {
      const s = splitMessage(decodeTransfer(b, firstValue(hs, 'content-transfer-encoding')));
      part.children.push(make(s.headers, s.body, part, depth + 1));
    }
    return part;
  };
  return make(headers, body, null, 0);
}

function splitMultipart(body: Buffer, boundary: string): Buffer[] {
  const text = body.toString('latin1');
  const delim = '--' + boundary;
  const parts: Buffer[] = [];
  const lines = text.split('\n');
  let cur: string[] | null = null;
  for (const l of lines) {
    const line = l.endsWith('\r') ? l.slice(0, -1) : l;
    if (line.startsWith(delim)) {
      const rest = line.slice(delim.length);
      if (rest.startsWith('--')) {
        if (cur) parts.push(Buffer.from(cur.join('\n'), 'latin1'));
        return parts;
      }
      if (/^[ \t]*$/.test(rest)) {
        if (cur) parts.push(Buffer.from(cur.join('\n'), 'latin1'));
        cur = [];
        continue;
      }
    }
    if (cur) cur.push(l);
  }
  // Missing close delimiter: keep what was found (RFC 2046 §5.1.1 robustness).
  if (cur) parts.push(Buffer.from(cur.join('\n'), 'latin1'));
  return parts;
}

export function decodeTransfer(b: Buffer, cte: string | undefined): Buffer {
  const enc = (cte ?? '').trim().toLowerCase();
  if (enc === 'base64') return Buffer.from(b.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (enc === 'quoted-printable') {
    const s = b.toString('latin1').replace(/=\r?\n/g, '');
    const out: number[] = [];
    for (let i = 0; i < s.length; i++) {
      if (s[i] === '=' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
        out.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      } else out.push(s.charCodeAt(i) & 0xff);
    }
    return Buffer.from(out);
  }
  return b;
}

/** A part's body decoded (transfer encoding and charset) to text, RFC 5173 §5.2 :content. */
export function partText(p: MimePart): string {
  // A part never changes once parsed: several body tests of one run decode it once.
  let text = partTexts.get(p);
  if (text === undefined) {
    const bytes = decodeTransfer(p.rawBody, firstValue(p.headers, 'content-transfer-encoding'));
    text = decodeCharset(bytes, p.params.charset ?? 'utf-8');
    partTexts.set(p, text);
  }
  return text;
}

const partTexts = new WeakMap<MimePart, string>();

/** All parts, depth first, the root first (RFC 5703 §3 order for foreverypart). */
export function walkParts(root: MimePart): MimePart[] {
  const out: MimePart[] = [];
  const visit = (p: MimePart) => {
    out.push(p);
    for (const c of p.children) visit(c);
  };
  visit(root);
  return out;
}

/** Strips HTML tags to approximate text for :text (RFC 5173 §5.3 leaves this to the implementation). */
export function htmlToText(s: string): string {
  return s
    .replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&nbsp;/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** Serialises header fields back to a block (used by editheader results). */
export function fieldValueForOutput(f: HeaderField): string {
  return f.raw.replace(/^[ \t]+/, '').replace(/\r?\n$/, '');
}
