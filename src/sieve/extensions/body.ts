// RFC 5173 body test: [COMPARATOR] [MATCH-TYPE] [:raw | :content <types> | :text] <key-list>.
// :raw is the undecoded body; :content the decoded parts whose Content-Type matches ("" any,
// "text" a main type, "text/html" exact); :text (the default) the text parts, HTML reduced to
// text. Parts come from message.ts's MIME tree (bounded by limits.maxMimeParts).
import { htmlToText, partText, walkParts, type MimePart } from '../message.js';
import { comparatorTag, matchTags, type ExtensionDef } from '../registry.js';

// The MIME tree is built once per run and never changes, so what several body tests of one
// run derive from it is remembered per part.
const leavesOf = new WeakMap<MimePart, { edits: number; leaves: MimePart[] }>();
const htmlTexts = new WeakMap<MimePart, string>();

function leafParts(root: MimePart): MimePart[] {
  const known = leavesOf.get(root);
  // RFC 5703 replace changes the tree below the same root: then the leaves are looked up again.
  if (known && known.edits === (root.edits ?? 0)) return known.leaves;
  const leaves = walkParts(root).filter((p) => p.children.length === 0 && !p.contentType.startsWith('multipart/'));
  leavesOf.set(root, { edits: root.edits ?? 0, leaves });
  return leaves;
}

function htmlText(p: MimePart): string {
  let t = htmlTexts.get(p);
  if (t === undefined) {
    t = htmlToText(partText(p));
    htmlTexts.set(p, t);
  }
  return t;
}

const body: ExtensionDef = {
  capabilities: ['body'],
  register(reg) {
    reg.add({
      name: 'body',
      kind: 'test',
      extension: 'body',
      tags: [
        comparatorTag(),
        ...matchTags(),
        { name: 'raw', group: 'transform' },
        { name: 'content', group: 'transform', arg: 'stringlist' },
        { name: 'text', group: 'transform' },
      ],
      positional: [{ name: 'key-list', kind: 'stringlist' }],
      test(n, rt) {
        const keys = rt.list(n.args[0]);
        if (n.tags.has('raw')) return rt.match(n, [rt.body.toString('utf8')], keys);
        const leaves = leafParts(rt.mime());
        const values: string[] = [];
        if (n.tags.has('content')) {
          const types = rt.list(n.tags.get('content')!.value).map((t) => t.toLowerCase());
          for (const p of leaves) {
            const [main] = p.contentType.split('/');
            if (types.some((t) => t === '' || t === p.contentType || (!t.includes('/') && t === main))) values.push(partText(p));
          }
        } else {
          for (const p of leaves) {
            if (p.contentType === 'text/html') values.push(htmlText(p));
            else if (p.contentType.startsWith('text/')) values.push(partText(p));
          }
        }
        return rt.match(n, values, keys);
      },
    });
  },
};
export default body;
