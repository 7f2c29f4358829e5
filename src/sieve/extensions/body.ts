// RFC 5173 body test: [COMPARATOR] [MATCH-TYPE] [:raw | :content <types> | :text] <key-list>.
// :raw is the undecoded body; :content the decoded parts whose Content-Type matches ("" any,
// "text" a main type, "text/html" exact); :text (the default) the text parts, HTML reduced to
// text. Parts come from message.ts's MIME tree (bounded by limits.maxMimeParts).
import { htmlToText, partText, walkParts } from '../message.js';
import { comparatorTag, matchTags, type ExtensionDef } from '../registry.js';

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
        const leaves = walkParts(rt.mime()).filter((p) => p.children.length === 0 && !p.contentType.startsWith('multipart/'));
        const values: string[] = [];
        if (n.tags.has('content')) {
          const types = rt.list(n.tags.get('content')!.value).map((t) => t.toLowerCase());
          for (const p of leaves) {
            const [main] = p.contentType.split('/');
            if (types.some((t) => t === '' || t === p.contentType || (!t.includes('/') && t === main))) values.push(partText(p));
          }
        } else {
          for (const p of leaves) {
            if (p.contentType === 'text/html') values.push(htmlToText(partText(p)));
            else if (p.contentType.startsWith('text/')) values.push(partText(p));
          }
        }
        return rt.match(n, values, keys);
      },
    });
  },
};
export default body;
