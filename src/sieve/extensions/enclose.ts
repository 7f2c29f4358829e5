// RFC 5703 §6 enclose [:subject string] [:headers string-list] <text: string>: the message is
// delivered wrapped in a new one, multipart/mixed with the text first and the original (with
// the script's other changes) as a message/rfc822 part. It is applied when the run ends, so the
// tests after it still see the original; a later enclose replaces an earlier one. Each :headers
// item is a whole "Name: value" line; lines that are not header fields, and the fields the
// wrapper writes itself or that must not be forged (MIME-Version, Content-Type, Received,
// Auto-Submitted), are compile errors when literal and ignored at run time.
import { ENCLOSE, parseHeaderLine, type Enclosure } from '../mime-write.js';
import type { ExtensionDef } from '../registry.js';

const enclose: ExtensionDef = {
  capabilities: ['enclose'],
  register(reg) {
    reg.add({
      name: 'enclose',
      kind: 'command',
      extension: 'enclose',
      tags: [
        { name: 'subject', arg: 'string' },
        { name: 'headers', arg: 'stringlist' },
      ],
      positional: [{ name: 'text', kind: 'string' }],
      check(n, v) {
        const h = n.tags.get('headers')?.value;
        if (h?.kind !== 'stringlist') return;
        for (const line of h.values) {
          if (v.has('variables') && line.includes('${')) continue;
          if (!parseHeaderLine(line)) v.report(`enclose: "${line}" is not a header field the new message may carry`, h.location);
        }
      },
      run(n, rt) {
        const subject = rt.tagStr(n, 'subject');
        const h = n.tags.get('headers')?.value;
        const e: Enclosure = { headers: h ? rt.list(h) : [], text: rt.str(n.args[0]), ...(subject !== undefined ? { subject } : {}) };
        rt.ext.set(ENCLOSE, e);
      },
    });
  },
};
export default enclose;
