// RFC 5703: foreverypart [:name] (§3, iterates the MIME parts below the current one, depth
// first), break [:name] (§3.2), the :mime and :anychild options of header, address and exists
// (§4), header :mime's :type/:subtype/:contenttype/:param (§4.2), and extracttext (§7, with the
// variables extension and its modifiers, RFC 5229 §4). replace and enclose (§5, §6) are
// replace.ts and enclose.ts.
import { parseContentType, partText, walkParts } from '../message.js';
import { BreakSignal, type CNode, type ExtensionDef } from '../registry.js';
import { applyModifiers, modifierTags, VARIABLE_NAME } from './variables.js';

const mime: ExtensionDef = {
  capabilities: ['mime', 'foreverypart', 'extracttext'],
  register(reg) {
    for (const t of ['header', 'address', 'exists']) {
      reg.addTags('test', t, [
        { name: 'mime', extension: 'mime' },
        { name: 'anychild', extension: 'mime' },
      ]);
      reg.addCheck('test', t, (n, v) => {
        if (n.tags.has('anychild') && !n.tags.has('mime')) v.report(':anychild needs :mime', n.tags.get('anychild')!.location);
      });
    }
    reg.addTags('test', 'header', [
      { name: 'type', group: 'mime-option', extension: 'mime' },
      { name: 'subtype', group: 'mime-option', extension: 'mime' },
      { name: 'contenttype', group: 'mime-option', extension: 'mime' },
      { name: 'param', group: 'mime-option', arg: 'stringlist', extension: 'mime' },
    ]);
    const header = reg.test('header')!;
    const plain = header.test!;
    header.test = (n, rt) => {
      const opt = (n.data.mimeOption as string | undefined) ?? (n.data.mimeOption = ['type', 'subtype', 'contenttype', 'param'].find((o) => n.tags.has(o)) ?? '');
      if (!opt) return plain(n, rt);
      // RFC 5703 §4.2: the options apply to Content-Type (and Content-Disposition for :param).
      const names = rt.list(n.args[0]).map((x) => x.toLowerCase());
      const values: string[] = [];
      const part = rt.currentPart ?? rt.mime();
      const parts = n.tags.has('anychild') ? walkParts(part) : [part];
      for (const p of parts) {
        for (const name of names) {
          for (const f of p.headers.filter((h) => h.name.toLowerCase() === name)) {
            const ct = parseContentType(f.raw.trim());
            const [type, sub] = ct.type.split('/');
            if (opt === 'type') values.push(type ?? '');
            else if (opt === 'subtype') values.push(sub ?? '');
            else if (opt === 'contenttype') values.push(ct.type);
            else for (const pn of rt.list(n.tags.get('param')!.value)) if (ct.params[pn.toLowerCase()] !== undefined) values.push(ct.params[pn.toLowerCase()]!);
          }
        }
      }
      return rt.match(n, values, rt.list(n.args[1]));
    };
    reg.add({
      name: 'foreverypart',
      kind: 'command',
      extension: 'foreverypart',
      tags: [{ name: 'name', arg: 'string' }],
      positional: [],
      block: 'required',
      check(n) {
        // Mark the break commands this loop encloses (checked by break's own check).
        const mark = (nodes: CNode[]) => {
          for (const c of nodes) {
            if (c.name === 'break') c.data.inLoop = [...((c.data.inLoop as string[] | undefined) ?? []), n.tags.get('name')?.value?.kind === 'string' ? (n.tags.get('name')!.value as { value: string }).value : ''];
            if (c.block) mark(c.block);
          }
        };
        mark(n.block ?? []);
      },
      async run(n, rt) {
        const name = rt.tagStr(n, 'name');
        const start = rt.currentPart ?? rt.mime();
        const parts = walkParts(start).slice(1);
        const saved = rt.currentPart;
        try {
          for (const p of parts) {
            // §5: parts inside a part that was replaced are gone.
            if (p.detached) continue;
            rt.currentPart = p;
            rt.step(n);
            await rt.runBlock(n.block ?? []);
          }
        } catch (e) {
          if (!(e instanceof BreakSignal) || (e.name !== undefined && e.name !== name)) throw e;
        } finally {
          rt.currentPart = saved;
        }
      },
    });
    reg.add({
      name: 'break',
      kind: 'command',
      extension: 'foreverypart',
      tags: [{ name: 'name', arg: 'string' }],
      positional: [],
      check(n, v) {
        const loops = n.data.inLoop as string[] | undefined;
        if (!loops) v.report('break outside foreverypart', n.location);
        const name = n.tags.get('name')?.value;
        if (loops && name?.kind === 'string' && !loops.includes(name.value)) v.report(`break: no enclosing foreverypart named "${name.value}"`, name.location);
      },
      run(n, rt) {
        throw new BreakSignal(rt.tagStr(n, 'name'));
      },
    });
    reg.add({
      name: 'extracttext',
      kind: 'command',
      extension: 'extracttext',
      tags: [{ name: 'first', arg: 'number' }, ...modifierTags()],
      positional: [{ name: 'varname', kind: 'string' }],
      check(n, v) {
        if (!v.has('variables')) v.report('extracttext needs require "variables"', n.location);
        const a = n.args[0];
        if (a?.kind === 'string' && !VARIABLE_NAME.test(a.value)) v.report(`extracttext: invalid variable name "${a.value}"`, a.location);
      },
      run(n, rt) {
        const part = rt.currentPart;
        if (!part) return rt.fail('extracttext outside foreverypart', n.location);
        let text = part.contentType.startsWith('text/') ? partText(part) : '';
        const first = n.tags.get('first')?.value;
        if (first?.kind === 'number') text = text.slice(0, first.value);
        // RFC 5703 §7: the modifiers of "set" (RFC 5229 §4) apply to the extracted text.
        rt.setVar(rt.str(n.args[0]), applyModifiers(n, text));
      },
    });
  },
};
export default mime;
