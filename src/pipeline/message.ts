// The message as plugins see it at the data and queue stages (MessageAccess in plugin.ts): the
// header block is split into fields once, edits (HeaderEditor) are recorded against that list,
// and render() writes the header block back with every untouched field byte for byte as received
// (folding, spacing and 8-bit content kept), then the body unchanged. mailparser runs only when a
// plugin asks for parsed(), once per message.
//
// Standards: RFC 5322 §2.2 (header fields: name ":" body; names are printable US-ASCII but ':'),
// §2.2.3 (folding and unfolding), §2.1.1 (998-octet line limit), RFC 5321 §2.3.8 (CRLF line ends),
// RFC 6532 §3.2 (UTF-8 in header values).
// Config keys read: none.
import { simpleParser, type ParsedMail } from 'mailparser';
import type { HeaderEditor, MessageAccess } from './plugin.js';

interface Field {
  /** '' for a line that is not a header field (kept as is, never listed). */
  name: string;
  /** The field as received or as added, including its trailing line end. */
  raw: Buffer;
  /** Unfolded value, leading/trailing white space removed. */
  value: string;
}

export interface Message extends MessageAccess {
  /** The message with header edits applied: untouched fields byte-identical, CRLF line ends. */
  render(): Buffer;
  /** True once a header edit changed something. */
  readonly edited: boolean;
}

/** RFC 5322 §2.2 field-name: printable US-ASCII except ':'. */
const FIELD_NAME = /^[!-9;-~]+$/;

export function createMessage(raw: Buffer): Message {
  // Split on first use: most chains never read a header, and a busy gateway would otherwise
  // split every message for nothing.
  let parts: ReturnType<typeof split> | undefined;
  const fieldsOf = (): Field[] => (parts ??= split(raw)).fields;
  let edited = false;
  let parsing: Promise<ParsedMail> | null = null;

  const headers: HeaderEditor = {
    list: () => fieldsOf().filter((f) => f.name !== '').map((f) => [f.name, f.value]),
    get: (name) => fieldsOf().filter((f) => f.name !== '' && same(f.name, name)).map((f) => f.value),
    add(name, value, where = 'top') {
      const f = makeField(name, value);
      const fields = fieldsOf();
      if (where === 'top') fields.unshift(f);
      else {
        // After the last real field, before any trailing junk line a broken client left.
        let i = fields.length;
        while (i > 0 && fields[i - 1]!.name === '') i--;
        fields.splice(i, 0, f);
      }
      edited = true;
    },
    remove(name, index) {
      const fields = fieldsOf();
      let n = 0;
      let seen = 0;
      for (let i = 0; i < fields.length; ) {
        const f = fields[i]!;
        if (f.name !== '' && same(f.name, name)) {
          if (index === undefined || seen === index) {
            fields.splice(i, 1);
            n++;
            seen++;
            if (index !== undefined) break;
            continue;
          }
          seen++;
        }
        i++;
      }
      if (n) edited = true;
      return n;
    },
  };

  return {
    size: raw.length,
    headers,
    get edited() {
      return edited;
    },
    raw: async () => raw,
    // Parsed from the bytes as received; header edits are not reflected (they are for the queue).
    parsed: () => (parsing ??= simpleParser(raw)),
    render() {
      if (!edited || !parts) return raw;
      const { fields, separator, body } = parts;
      return Buffer.concat([...fields.map((f) => f.raw), separator, body]);
    },
  };
}

/**
 * Splits at the first empty line (RFC 5322 §2.1). A message with no empty line is all header;
 * one that starts with an empty line has no header fields. A bare LF is accepted as a line end
 * when reading, so the split still works on mail that was not normalised.
 */
function split(raw: Buffer): { fields: Field[]; separator: Buffer; body: Buffer } {
  const { headerEnd, bodyStart } = findEmptyLine(raw);
  // Only the header block becomes a string (latin1: one code unit per byte); the body stays bytes.
  const block = raw.toString('latin1', 0, headerEnd);
  const fields: Field[] = [];
  // Each physical line with its line end; a line starting with WSP continues the previous field.
  const lines = block.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  for (const line of lines) {
    const last = fields[fields.length - 1];
    if ((line.startsWith(' ') || line.startsWith('\t')) && last && last.name !== '') {
      last.raw = Buffer.concat([last.raw, Buffer.from(line, 'latin1')]);
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon).replace(/[ \t]+$/, '') : '';
    fields.push({ name: FIELD_NAME.test(name) ? name : '', raw: Buffer.from(line, 'latin1'), value: '' });
  }
  for (const f of fields) if (f.name) f.value = unfold(f.raw);
  return { fields, separator: raw.subarray(headerEnd, bodyStart), body: raw.subarray(bodyStart) };
}

/** Where the first empty line ("\r\n" or a bare "\n") starts and ends; both at the end when there is none. */
function findEmptyLine(raw: Buffer): { headerEnd: number; bodyStart: number } {
  const eol = (at: number) => (raw[at] === 0x0a ? 1 : raw[at] === 0x0d && raw[at + 1] === 0x0a ? 2 : 0);
  const first = eol(0);
  if (first) return { headerEnd: 0, bodyStart: first };
  for (let nl = raw.indexOf(0x0a); nl >= 0; nl = raw.indexOf(0x0a, nl + 1)) {
    const n = eol(nl + 1);
    if (n) return { headerEnd: nl + 1, bodyStart: nl + 1 + n };
  }
  return { headerEnd: raw.length, bodyStart: raw.length };
}

/** RFC 5322 §2.2.3: unfolding removes each CRLF that is followed by WSP. */
function unfold(raw: Buffer): string {
  const s = raw.toString('utf8');
  const colon = s.indexOf(':');
  return s
    .slice(colon + 1)
    .replace(/\r?\n(?=[ \t])/g, '')
    .replace(/\r?\n$/, '')
    .trim();
}

function same(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/**
 * A new field, folded at white space so no line passes 78 characters when it can be helped
 * (RFC 5322 §2.1.1); CR or LF in the value would smuggle in another header, so they are refused.
 */
function makeField(name: string, value: string): Field {
  if (!FIELD_NAME.test(name)) throw new TypeError(`invalid header field name: ${JSON.stringify(name)}`);
  if (/[\r\n\0]/.test(value)) throw new TypeError(`header ${name}: value must not contain CR, LF or NUL`);
  const v = value.trim();
  const words = v.split(/(?=[ \t])/);
  const lines: string[] = [];
  let cur = `${name}:`;
  for (const w of words) {
    const piece = cur === `${name}:` ? ` ${w.replace(/^[ \t]/, '')}` : w;
    if (cur.length + piece.length > 78 && cur !== `${name}:` && /^[ \t]/.test(piece)) {
      lines.push(cur);
      cur = piece;
    } else cur += piece;
  }
  lines.push(cur);
  const text = (v === '' ? `${name}:` : lines.join('\r\n')) + '\r\n';
  return { name, raw: Buffer.from(text, 'utf8'), value: v };
}
