// RFC 5703 §5 replace [:mime] [:subject string] [:from string] <replacement: string>. Inside
// foreverypart it replaces the current part; outside, the whole body. Without :mime the
// replacement is a text/plain part in UTF-8; with :mime it is a MIME entity (header fields, an
// empty line, the body). The change takes effect at once: later tests see the new structure and
// a running foreverypart does not go into parts that are gone. When the whole message is
// replaced, :subject and :from set those fields and the previous ones are kept as
// Original-Subject and Original-From (§5); the old Content-* fields and MIME-Version give way to
// the new entity's. An invalid :from is a compile error when literal and ignored at run time
// (§5 recommends ignoring). Writing the result: ../mime-write.ts.
import { buildMimeTree, parseAddressList, splitMessage, walkParts, type HeaderField } from '../message.js';
import { BODY_CHANGED, encodeHeaderValue, replacePart, textEntity } from '../mime-write.js';
import type { CNode, ExtensionDef, Runtime, ValidateCtx } from '../registry.js';

function validMailboxList(s: string): boolean {
  const list = parseAddressList(s);
  return list.length > 0 && list.every((a) => a.valid);
}

function checkFrom(n: CNode, v: ValidateCtx): void {
  const f = n.tags.get('from')?.value;
  if (f?.kind !== 'string' || (v.has('variables') && f.value.includes('${'))) return;
  if (!validMailboxList(f.value)) v.report(`replace: invalid :from address "${f.value}"`, f.location);
}

/** The new entity: text/plain, or the :mime text split into header fields and body. */
function entity(n: CNode, rt: Runtime): { headers: HeaderField[]; body: Buffer } {
  const text = rt.str(n.args[0]);
  if (!n.tags.has('mime')) return textEntity(text);
  const s = splitMessage(Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8'));
  return { headers: s.headers, body: s.body };
}

function replaceWhole(n: CNode, rt: Runtime, headers: HeaderField[], body: Buffer): void {
  const isMimeField = (f: HeaderField) => /^(content-|mime-version$)/i.test(f.name);
  const kept = rt.headers.filter((f) => !isMimeField(f));
  const subject = rt.tagStr(n, 'subject');
  const from = rt.tagStr(n, 'from');
  const out: HeaderField[] = [];
  for (const f of kept) {
    const name = f.name.toLowerCase();
    if (subject !== undefined && name === 'subject') out.push({ name: 'Original-Subject', raw: f.raw });
    else if (from !== undefined && validMailboxList(from) && name === 'from') out.push({ name: 'Original-From', raw: f.raw });
    else out.push(f);
  }
  if (subject !== undefined) out.push({ name: 'Subject', raw: ' ' + encodeHeaderValue(subject) });
  if (from !== undefined && validMailboxList(from)) out.push({ name: 'From', raw: ' ' + from.replace(/[\r\n]+/g, ' ') });
  out.push({ name: 'MIME-Version', raw: ' 1.0' }, ...headers.filter((f) => isMimeField(f) && !/^mime-version$/i.test(f.name)));
  rt.headers = out;
  rt.headersEdited = true;
  const root = buildMimeTree(headers, body, rt.limits);
  root.edits = (rt.mime().edits ?? 0) + 1;
  for (const p of walkParts(rt.mime())) p.detached = true;
  rt.setMime(root);
  rt.body = body;
  rt.ext.set(BODY_CHANGED, true);
}

const replace: ExtensionDef = {
  capabilities: ['replace'],
  register(reg) {
    reg.add({
      name: 'replace',
      kind: 'command',
      extension: 'replace',
      tags: [
        { name: 'mime', group: 'replace-mime' },
        { name: 'subject', arg: 'string' },
        { name: 'from', arg: 'string' },
      ],
      positional: [{ name: 'replacement', kind: 'string' }],
      check: checkFrom,
      run(n, rt) {
        const { headers, body } = entity(n, rt);
        const part = rt.currentPart;
        if (!part || part === rt.mime()) return replaceWhole(n, rt, headers, body);
        // §5: :subject and :from apply only when the entire message is replaced.
        rt.currentPart = replacePart(rt, part, headers, body);
      },
    });
  },
};
export default replace;
