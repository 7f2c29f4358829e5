// RFC 5228 base language: control (§3: if/elsif/else, stop; require is handled by the require
// pass), actions (§4: keep, discard, redirect) and tests (§5: address, allof, anyof, exists,
// false, header, not, size, true). Helpers shared with other extensions live here too: header
// selection (with RFC 5260 index and RFC 5703 :mime/:anychild when present) and address parts
// (with RFC 5233 :user/:detail).
import {
  addressPartTags,
  comparatorTag,
  matchTags,
  StopSignal,
  type CNode,
  type ExtensionDef,
  type Runtime,
  type ValidateCtx,
} from '../registry.js';
import { headerValue, parseAddressList, unfold, type HeaderField, type MailAddress } from '../message.js';

/** RFC 5233 §4: the separator between user and detail. */
export const SUBADDRESS_SEPARATOR = '+';

/** Address part of one address (RFC 5228 §2.7.4, RFC 5233); null when it has none. */
export function addressPart(node: CNode, a: MailAddress): string | null {
  const part = (node.data.addressPart as string | undefined) ?? (node.data.addressPart = ['localpart', 'domain', 'user', 'detail'].find((p) => node.tags.has(p)) ?? 'all');
  if (part === 'all') return a.address;
  if (!a.valid) return null;
  const at = a.address.lastIndexOf('@');
  const local = a.address.slice(0, at);
  if (part === 'localpart') return local;
  if (part === 'domain') return a.address.slice(at + 1);
  const sep = local.indexOf(SUBADDRESS_SEPARATOR);
  if (part === 'user') return sep < 0 ? local : local.slice(0, sep);
  return sep < 0 ? null : local.slice(sep + 1);
}

/** The header blocks a test looks at: the message, or with :mime the current part (RFC 5703 §4.1). */
export function headerBlocks(rt: Runtime, node: CNode): HeaderField[][] {
  if (!node.tags.has('mime')) return [rt.headers];
  const part = rt.currentPart ?? rt.mime();
  const blocks = [part === rt.mime() ? rt.headers : part.headers];
  if (node.tags.has('anychild')) {
    const visit = (p: typeof part) => {
      for (const c of p.children) {
        blocks.push(c.headers);
        visit(c);
      }
    };
    visit(part);
  }
  return blocks;
}

/** Fields with the given names, then the RFC 5260 §6 :index/:last selection. */
export function selectFields(rt: Runtime, node: CNode, names: string[]): HeaderField[] {
  const out: HeaderField[] = [];
  for (const block of headerBlocks(rt, node)) {
    for (const name of names) for (const f of rt.fieldsNamed(block, name)) out.push(f);
  }
  const idx = node.tags.get('index');
  if (idx?.value?.kind === 'number') {
    // Index counts all fields of the named headers in message order (RFC 5260 §6).
    const ordered = rt.headers.filter((f) => out.includes(f));
    const all = ordered.length === out.length ? ordered : out;
    const n = idx.value.value;
    const pick = node.tags.has('last') ? all[all.length - n] : all[n - 1];
    return pick ? [pick] : [];
  }
  return out;
}

export function addressesOf(f: HeaderField, rt?: Runtime): MailAddress[] {
  return rt ? rt.addresses(unfold(f.raw)) : parseAddressList(unfold(f.raw));
}

/** RFC 5228 §2.7.4 / RFC 5233: envelope and address tests share the address-part values. */
export function addressValues(node: CNode, addrs: MailAddress[]): string[] {
  const out: string[] = [];
  for (const a of addrs) {
    const p = addressPart(node, a);
    if (p !== null) out.push(p);
  }
  return out;
}

function checkSize(node: CNode, v: ValidateCtx): void {
  if (!node.tags.has('over') && !node.tags.has('under')) v.report("size needs :over or :under", node.location);
}

/** RFC 5228 §4.2: the redirect address must be a valid address. */
export function isValidRedirect(s: string): boolean {
  const a = parseAddressList(s);
  return a.length === 1 && a[0]!.valid && !/[\s]/.test(a[0]!.address);
}

const core: ExtensionDef = {
  capabilities: ['comparator-i;octet', 'comparator-i;ascii-casemap'],
  register(reg) {
    // §3.1 control; run by the interpreter's block loop.
    reg.add({ name: 'if', kind: 'command', tags: [], positional: [], tests: 'one', block: 'required' });
    reg.add({ name: 'elsif', kind: 'command', tags: [], positional: [], tests: 'one', block: 'required' });
    reg.add({ name: 'else', kind: 'command', tags: [], positional: [], tests: 'none', block: 'required' });
    reg.add({ name: 'require', kind: 'command', tags: [], positional: [{ name: 'capabilities', kind: 'stringlist' }] });
    reg.add({
      name: 'stop',
      kind: 'command',
      tags: [],
      positional: [],
      run() {
        throw new StopSignal();
      },
    });
    // §4.3 keep (flags per RFC 5232 §5 when imap4flags is required).
    reg.add({
      name: 'keep',
      kind: 'command',
      tags: [],
      positional: [],
      run(n, rt) {
        rt.actions.add({ type: 'keep', flags: flagsFor(rt, n) }, n.location, snapshot(rt));
      },
    });
    reg.add({
      name: 'discard',
      kind: 'command',
      tags: [],
      positional: [],
      run(n, rt) {
        rt.actions.add({ type: 'discard' }, n.location);
      },
    });
    reg.add({
      name: 'redirect',
      kind: 'command',
      tags: [],
      positional: [{ name: 'address', kind: 'string' }],
      check(n, v) {
        const a = n.args[0];
        if (a?.kind === 'string' && !(v.has('variables') && a.value.includes('${')) && !isValidRedirect(a.value)) {
          v.report(`redirect: invalid address "${a.value}"`, a.location);
        }
      },
      run(n, rt) {
        const address = rt.str(n.args[0]);
        if (!isValidRedirect(address)) rt.fail(`redirect: invalid address "${address}"`, n.location);
        const bare = parseAddressList(address)[0]!.address;
        rt.actions.add({ type: 'redirect', address: bare, copy: n.tags.has('copy') }, n.location);
      },
    });

    // §5 tests.
    reg.add({
      name: 'address',
      kind: 'test',
      tags: [comparatorTag(), ...matchTags(), ...addressPartTags()],
      positional: [
        { name: 'header-list', kind: 'stringlist' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      test(n, rt) {
        const values: string[] = [];
        for (const f of selectFields(rt, n, rt.list(n.args[0]))) values.push(...addressValues(n, addressesOf(f, rt)));
        return rt.match(n, values, rt.list(n.args[1]));
      },
    });
    reg.add({
      name: 'header',
      kind: 'test',
      tags: [comparatorTag(), ...matchTags()],
      positional: [
        { name: 'header-names', kind: 'stringlist' },
        { name: 'key-list', kind: 'stringlist' },
      ],
      test(n, rt) {
        const values = selectFields(rt, n, rt.list(n.args[0])).map(headerValue);
        return rt.match(n, values, rt.list(n.args[1]));
      },
    });
    reg.add({
      name: 'exists',
      kind: 'test',
      tags: [],
      positional: [{ name: 'header-names', kind: 'stringlist' }],
      test(n, rt) {
        const blocks = headerBlocks(rt, n);
        return rt.list(n.args[0]).every((h) => blocks.some((b) => rt.fieldsNamed(b, h).length > 0));
      },
    });
    reg.add({
      name: 'size',
      kind: 'test',
      tags: [
        { name: 'over', group: 'size' },
        { name: 'under', group: 'size' },
      ],
      positional: [{ name: 'limit', kind: 'number' }],
      check: checkSize,
      test(n, rt) {
        const limit = n.args[0]?.kind === 'number' ? n.args[0].value : 0;
        return n.tags.has('over') ? rt.rawSize > limit : rt.rawSize < limit;
      },
    });
    reg.add({ name: 'true', kind: 'test', tags: [], positional: [], test: () => true });
    reg.add({ name: 'false', kind: 'test', tags: [], positional: [], test: () => false });
    reg.add({
      name: 'not',
      kind: 'test',
      tags: [],
      positional: [],
      tests: 'one',
      test(n, rt) {
        const r = rt.evalTest(n.tests[0]!);
        return typeof r === 'boolean' ? !r : r.then((x) => !x);
      },
    });
    reg.add({
      name: 'allof',
      kind: 'test',
      tags: [],
      positional: [],
      tests: 'list',
      test: (n, rt) => firstWith(rt, n.tests, false, 0),
    });
    reg.add({
      name: 'anyof',
      kind: 'test',
      tags: [],
      positional: [],
      tests: 'list',
      test: (n, rt) => firstWith(rt, n.tests, true, 0),
    });
  },
};

/**
 * allof (stop at the first false) and anyof (stop at the first true), RFC 5228 §5.1/§5.3: tests
 * run in order and stay synchronous until one of them answers with a promise.
 */
function firstWith(rt: Runtime, tests: CNode[], stopOn: boolean, from: number): boolean | Promise<boolean> {
  for (let i = from; i < tests.length; i++) {
    const r = rt.evalTest(tests[i]!);
    if (typeof r !== 'boolean') return r.then((x) => (x === stopOn ? stopOn : firstWith(rt, tests, stopOn, i + 1)));
    if (r === stopOn) return stopOn;
  }
  return !stopOn;
}

/** RFC 5232 §5: :flags given, else the internal variable; nothing without imap4flags. */
export function flagsFor(rt: Runtime, n: CNode): string[] {
  if (!rt.required.has('imap4flags')) return [];
  const t = n.tags.get('flags');
  if (t?.value) return normalizeFlags(rt.list(t.value));
  return [...rt.flags];
}

/** RFC 5232 §3: a flag list is space-separated names; duplicates (case-insensitive) collapse. */
export function normalizeFlags(list: string[]): string[] {
  const out: string[] = [];
  for (const s of list) {
    for (const f of s.split(/\s+/)) {
      if (f !== '' && !out.some((x) => x.toLowerCase() === f.toLowerCase())) out.push(f);
    }
  }
  return out;
}

export function snapshot(rt: Runtime): HeaderField[] {
  return rt.headers.map((h) => ({ ...h }));
}

export default core;
