// RFC 5293 editheader: addheader [:last] <field-name> <value> and deleteheader [:index <n>
// [:last]] [COMPARATOR] [MATCH-TYPE] <field-name> [<value-patterns>]. Edits apply to the copy
// kept, filed or redirected afterwards (actions.ts snapshots headers per stored copy). Received
// and Auto-Submitted can be neither added nor deleted (§6 lets an implementation protect
// fields; trace and loop-prevention headers must survive): a compile error when literal, ignored
// when the name comes from a variable. Non-ASCII values are RFC 2047-encoded (§4).
import { headerValue } from '../message.js';
import { comparatorTag, matchTags, type CNode, type ExtensionDef, type ValidateCtx } from '../registry.js';
import { checkIndex } from './date.js';

export const PROTECTED_HEADERS = ['received', 'auto-submitted'];
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/; // RFC 5322 §2.2 ftext
const MAX_FIELD_VALUE = 4096;

function encodeValue(v: string): string {
  // RFC 5293 §4: MUST encode with RFC 2047 when needed; folding long values is optional.
  const clean = v.replace(/\r?\n(?![ \t])/g, ' ');
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(clean)) return clean;
  return `=?UTF-8?B?${Buffer.from(clean, 'utf8').toString('base64')}?=`;
}

function checkName(what: string) {
  return (n: CNode, v: ValidateCtx) => {
    const a = n.args[0];
    if (a?.kind !== 'string' || (v.has('variables') && a.value.includes('${'))) return;
    if (!FIELD_NAME.test(a.value)) v.report(`${what}: invalid header field name "${a.value}"`, a.location);
    else if (PROTECTED_HEADERS.includes(a.value.toLowerCase())) v.report(`${what}: header "${a.value}" cannot be changed`, a.location);
  };
}

const editheader: ExtensionDef = {
  capabilities: ['editheader'],
  register(reg) {
    reg.add({
      name: 'addheader',
      kind: 'command',
      extension: 'editheader',
      tags: [{ name: 'last' }],
      positional: [
        { name: 'field-name', kind: 'string' },
        { name: 'value', kind: 'string' },
      ],
      check: checkName('addheader'),
      run(n, rt) {
        const name = rt.str(n.args[0]);
        if (!FIELD_NAME.test(name) || PROTECTED_HEADERS.includes(name.toLowerCase())) return;
        const value = rt.str(n.args[1]).slice(0, MAX_FIELD_VALUE);
        const field = { name, raw: ' ' + encodeValue(value) };
        if (n.tags.has('last')) rt.headers.push(field);
        else rt.headers.unshift(field);
        rt.headersEdited = true;
      },
    });
    reg.add({
      name: 'deleteheader',
      kind: 'command',
      extension: 'editheader',
      tags: [comparatorTag(), ...matchTags(), { name: 'index', arg: 'number' }, { name: 'last' }],
      positional: [
        { name: 'field-name', kind: 'string' },
        { name: 'value-patterns', kind: 'stringlist', optional: true },
      ],
      check(n, v) {
        checkName('deleteheader')(n, v);
        checkIndex(n, v);
      },
      run(n, rt) {
        const name = rt.str(n.args[0]).toLowerCase();
        if (PROTECTED_HEADERS.includes(name)) return;
        const matching = rt.headers.filter((h) => h.name.toLowerCase() === name);
        let candidates = matching;
        const idx = n.tags.get('index')?.value;
        if (idx?.kind === 'number') {
          const pick = n.tags.has('last') ? matching[matching.length - idx.value] : matching[idx.value - 1];
          candidates = pick ? [pick] : [];
        }
        if (n.args.length > 1) {
          const keys = rt.list(n.args[1]);
          candidates = candidates.filter((h) => rt.match(n, [headerValue(h)], keys));
        }
        if (candidates.length === 0) return;
        rt.headers = rt.headers.filter((h) => !candidates.includes(h));
        rt.headersEdited = true;
      },
    });
  },
};
export default editheader;
