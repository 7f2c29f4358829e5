// Writing MIME back, for the RFC 5703 actions that change the message itself: replace (§5, a part
// or the whole body gets new content) and enclose (§6, the message is wrapped into a new one).
// The runtime keeps the tree (message.ts MimePart) and changes it in place; at the end of a run
// rewrittenMessage() renders the message as it now stands, or returns null when nothing changed.
// Parts untouched by replace keep their bytes; a multipart above a replaced part is rebuilt from
// its children (its preamble and epilogue are dropped, RFC 2046 §5.1.1 says to ignore them).
//
// Standards: RFC 2045 (headers, transfer encodings), RFC 2046 §5.1 (multipart), RFC 2047
// (encoded words in Subject), RFC 5322 §2.1.1 (line lengths), RFC 5703 §5-§6.
import { createHash } from 'node:crypto';
import { buildMimeTree, walkParts, type HeaderField, type MimePart } from './message.js';
import type { Runtime } from './registry.js';

/** State the replace and enclose actions leave in rt.ext. */
export const BODY_CHANGED = 'mime-write:body-changed';
export const ENCLOSE = 'mime-write:enclose';

export interface Enclosure {
  subject?: string;
  headers: string[];
  text: string;
}

const isAscii = (s: string) => /^[\x20-\x7e\t\r\n]*$/.test(s);

/** RFC 2047 encoded word when the value is not plain ASCII (RFC 5703 §5: "if and only if"). */
export function encodeHeaderValue(v: string): string {
  const one = v.replace(/[\r\n]+/g, ' ');
  return /^[\x20-\x7e\t]*$/.test(one) ? one : `=?UTF-8?B?${Buffer.from(one, 'utf8').toString('base64')}?=`;
}

/** A text/plain entity in UTF-8 (RFC 5703 §5 without :mime): 7bit when ASCII, else base64. */
export function textEntity(text: string): { headers: HeaderField[]; body: Buffer } {
  const crlf = text.replace(/\r?\n/g, '\r\n');
  const ascii = isAscii(crlf);
  const body = ascii ? Buffer.from(crlf, 'utf8') : Buffer.from((Buffer.from(crlf, 'utf8').toString('base64').match(/.{1,76}/g) ?? []).join('\r\n') + '\r\n');
  return {
    headers: [
      { name: 'Content-Type', raw: ' text/plain; charset=utf-8' },
      { name: 'Content-Transfer-Encoding', raw: ascii ? ' 7bit' : ' base64' },
    ],
    body,
  };
}

const headerBytes = (hs: HeaderField[]) => hs.map((f) => `${f.name}:${f.raw.replace(/\r?\n/g, '\r\n')}\r\n`).join('');

/** The body of a part as it now stands. */
export function bodyBytes(p: MimePart): Buffer {
  if (!p.edited) return p.rawBody;
  if (p.contentType.startsWith('multipart/') && p.params.boundary) {
    const b = p.params.boundary;
    const chunks: Buffer[] = [];
    for (const c of p.children) chunks.push(Buffer.from(`--${b}\r\n`), entityBytes(c), Buffer.from('\r\n'));
    chunks.push(Buffer.from(`--${b}--\r\n`));
    return Buffer.concat(chunks);
  }
  if (p.contentType === 'message/rfc822' && p.children[0]) return entityBytes(p.children[0]);
  return p.rawBody;
}

/** A part's header and body. */
export function entityBytes(p: MimePart): Buffer {
  return Buffer.concat([Buffer.from(headerBytes(p.headers) + '\r\n', 'utf8'), bodyBytes(p)]);
}

/**
 * RFC 5703 §5: replaces `part` with a new entity (header fields and body). The old part's
 * descendants leave the message (a foreverypart loop skips them); the new part is returned, to
 * become the current one. Replacing the root is the caller's business (it owns rt.headers).
 */
export function replacePart(rt: Runtime, part: MimePart, headers: HeaderField[], body: Buffer): MimePart {
  for (const d of walkParts(part)) d.detached = true;
  const fresh = buildMimeTree(headers, body, { maxMimeParts: rt.limits.maxMimeParts, maxMimeDepth: Math.max(1, rt.limits.maxMimeDepth - part.depth) });
  for (const d of walkParts(fresh)) d.depth += part.depth;
  fresh.parent = part.parent;
  fresh.edited = true;
  if (part.parent) {
    const siblings = part.parent.children;
    siblings[siblings.indexOf(part)] = fresh;
    for (let p: MimePart | null = part.parent; p; p = p.parent) p.edited = true;
  }
  const root = rootOf(fresh);
  root.edits = (root.edits ?? 0) + 1;
  rt.ext.set(BODY_CHANGED, true);
  return fresh;
}

function rootOf(p: MimePart): MimePart {
  let r = p;
  while (r.parent) r = r.parent;
  return r;
}

/** The message after replace/enclose, or null when neither ran. */
export function rewrittenMessage(rt: Runtime): Buffer | null {
  const enclosure = rt.ext.get(ENCLOSE) as Enclosure | undefined;
  if (!rt.ext.get(BODY_CHANGED) && !enclosure) return null;
  const message = Buffer.concat([Buffer.from(headerBytes(rt.headers) + '\r\n', 'utf8'), bodyBytes(rt.mime())]);
  return enclosure ? enclose(message, rt.headers, enclosure, rt.host.now?.() ?? new Date()) : message;
}

/** Header fields of the original message that the enclosing one repeats (RFC 5703 §6). */
const CARRIED = ['from', 'to', 'cc', 'reply-to'];

/**
 * RFC 5703 §6: a new message, multipart/mixed, whose first part is the text and whose second is
 * the original message (message/rfc822). Its header: the :headers lines, the Subject (given, or
 * the original one), the original From, To, Cc and Reply-To, a new Date, MIME fields.
 */
export function enclose(message: Buffer, orig: HeaderField[], e: Enclosure, now: Date): Buffer {
  const boundary = `----=_sieve_enclose_${createHash('sha256').update(message).digest('hex').slice(0, 24)}`;
  const own = e.headers.map(parseHeaderLine).filter((f): f is HeaderField => f !== null);
  const ownNames = new Set(own.map((f) => f.name.toLowerCase()));
  const fields: HeaderField[] = [...own];
  if (!ownNames.has('subject')) {
    const subject = e.subject ?? orig.find((f) => f.name.toLowerCase() === 'subject')?.raw.trim() ?? '';
    fields.push({ name: 'Subject', raw: ' ' + (e.subject !== undefined ? encodeHeaderValue(subject) : subject) });
  }
  for (const f of orig) if (CARRIED.includes(f.name.toLowerCase()) && !ownNames.has(f.name.toLowerCase())) fields.push(f);
  if (!ownNames.has('date')) fields.push({ name: 'Date', raw: ' ' + now.toUTCString().replace('GMT', '+0000') });
  fields.push({ name: 'MIME-Version', raw: ' 1.0' }, { name: 'Content-Type', raw: ` multipart/mixed; boundary="${boundary}"` });
  const text = textEntity(e.text);
  return Buffer.concat([
    Buffer.from(headerBytes(fields) + '\r\n', 'utf8'),
    Buffer.from(`--${boundary}\r\n${headerBytes(text.headers)}\r\n`, 'utf8'),
    text.body,
    Buffer.from(`\r\n--${boundary}\r\nContent-Type: message/rfc822\r\n\r\n`, 'utf8'),
    message,
    Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8'),
  ]);
}

/** One "Name: value" line of enclose :headers, or null when it is not a header field. */
export function parseHeaderLine(line: string): HeaderField | null {
  const colon = line.indexOf(':');
  if (colon <= 0 || /[\r\n\0]/.test(line)) return null;
  const name = line.slice(0, colon).trim();
  if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name) || ['received', 'auto-submitted', 'mime-version', 'content-type'].includes(name.toLowerCase())) return null;
  return { name, raw: ' ' + encodeHeaderValue(line.slice(colon + 1).trim()) };
}
