// Pass: known commands, tests and tags; argument count and types; commands vs tests in the right
// places; `elsif`/`else` after `if`; block and test shapes (RFC 5228 §2.6, §3, §8.2). Builds the
// validated tree (CNode) the interpreter runs. Also applies encoded-character (RFC 5228
// §2.4.2.4) to string values when required, and handles `if ihave` guards (RFC 5463 §4): a block
// behind `ihave` of unsupported capabilities is not validated (it can never run).
import type { Argument, CommandNode, Location, StringArg, TestNode } from '../ast.js';
import type { CNode, CommandSpec, TagUse, ValidateCtx, Value } from '../registry.js';

const KIND_NAME = { string: 'a string', stringlist: 'a string list', number: 'a number' } as const;

/** RFC 5228 §2.4.2.4: ${hex:…} and ${unicode:…}; an invalid encoding is left as it is. */
export function decodeEncodedCharacters(s: string): string {
  if (!s.includes('${')) return s;
  return s.replace(/\$\{(hex|unicode):([\s0-9a-fA-F]*)\}/gi, (whole, kind: string, body: string) => {
    const items = body.trim() === '' ? [] : body.trim().split(/\s+/);
    if (kind.toLowerCase() === 'hex') {
      if (items.some((h) => h.length > 2 && !/^0*[0-9a-f]{1,2}$/i.test(h))) return whole;
      return Buffer.from(items.map((h) => parseInt(h, 16))).toString('utf8');
    }
    const cps = items.map((h) => parseInt(h, 16));
    if (cps.some((c) => c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))) return whole;
    return String.fromCodePoint(...cps);
  });
}

export function buildPass(commands: CommandNode[], v: ValidateCtx): CNode[] {
  return buildBlock(commands, v);
}

function buildBlock(commands: CommandNode[], v: ValidateCtx): CNode[] {
  const out: CNode[] = [];
  let prev: string | null = null;
  for (const c of commands) {
    if ((c.name === 'elsif' || c.name === 'else') && prev !== 'if' && prev !== 'elsif') {
      v.report(`'${c.name}' must follow 'if' or 'elsif'`, c.nameLocation);
    }
    prev = c.name;
    if (c.name === 'require') continue; // requirePass handled it
    const n = buildCommand(c, v);
    if (n) out.push(n);
  }
  return out;
}

function ihaveGuard(c: CommandNode, v: ValidateCtx): { add: string[]; supported: boolean } | null {
  if ((c.name !== 'if' && c.name !== 'elsif') || c.tests.length !== 1) return null;
  const t = c.tests[0]!;
  if (t.name !== 'ihave' || !v.has('ihave')) return null;
  const a = t.args[0];
  if (!a || (a.type !== 'string' && a.type !== 'stringlist')) return null;
  const caps = (a.type === 'string' ? [a] : a.items).map((s) => s.value.toLowerCase());
  return { add: caps, supported: caps.every((x) => v.registry.capabilities.has(x)) };
}

function buildCommand(c: CommandNode, v: ValidateCtx): CNode | null {
  const spec = v.registry.command(c.name);
  if (!spec) {
    if (v.registry.test(c.name)) v.report(`'${c.name}' is a test, not a command`, c.nameLocation);
    else v.report(`unknown command '${c.name}'`, c.nameLocation);
    return null;
  }
  if (spec.extension && !v.has(spec.extension)) {
    v.report(`command '${c.name}' needs require "${spec.extension}"`, c.nameLocation);
  }
  const node = shape(spec, c, v);
  if (c.block !== null) {
    if (spec.block !== 'required') v.report(`'${c.name}' takes no block`, c.nameLocation);
    const guard = ihaveGuard(c, v);
    if (guard && !guard.supported) node.block = []; // can never run (RFC 5463 §4)
    else if (guard) {
      const added = guard.add.filter((x) => !v.required.has(x));
      for (const x of added) v.required.add(x);
      node.block = buildBlock(c.block, v);
      for (const x of added) v.required.delete(x);
    } else node.block = buildBlock(c.block, v);
  } else if (spec.block === 'required') {
    v.report(`'${c.name}' needs a block`, c.location.end.offset > c.nameLocation.end.offset ? c.nameLocation : c.location);
  }
  return node;
}

function buildTest(t: TestNode, v: ValidateCtx): CNode | null {
  const spec = v.registry.test(t.name);
  if (!spec) {
    if (v.registry.command(t.name)) v.report(`'${t.name}' is a command, not a test`, t.nameLocation);
    else v.report(`unknown test '${t.name}'`, t.nameLocation);
    return null;
  }
  if (spec.extension && !v.has(spec.extension)) {
    v.report(`test '${t.name}' needs require "${spec.extension}"`, t.nameLocation);
  }
  return shape(spec, t, v);
}

function toValue(a: Argument, v: ValidateCtx): Value {
  const str = (s: StringArg) => {
    if (s.value.length > v.limits.maxStringLength) v.report(`string longer than ${v.limits.maxStringLength} characters`, s.location);
    return v.has('encoded-character') ? decodeEncodedCharacters(s.value) : s.value;
  };
  if (a.type === 'string') return { kind: 'string', value: str(a), location: a.location };
  if (a.type === 'stringlist') return { kind: 'stringlist', values: a.items.map(str), location: a.location };
  if (a.type === 'number') return { kind: 'number', value: a.value, location: a.location };
  throw new Error('tag is not a value');
}

function fits(a: Argument, kind: 'string' | 'stringlist' | 'number'): boolean {
  if (kind === 'number') return a.type === 'number';
  if (kind === 'string') return a.type === 'string';
  return a.type === 'string' || a.type === 'stringlist';
}

function shape(spec: CommandSpec, n: CommandNode | TestNode, v: ValidateCtx): CNode {
  const what = `${spec.kind} '${spec.name}'`;
  const tags = new Map<string, TagUse>();
  const groups = new Map<string, string>();
  const args: Value[] = [];
  let i = 0;
  const list = n.args;
  let positionalStarted = false;
  while (i < list.length) {
    const a = list[i]!;
    if (a.type !== 'tag') {
      positionalStarted = true;
      args.push(toValue(a, v));
      i++;
      continue;
    }
    i++;
    const tag = spec.tags.find((t) => t.name === a.name);
    if (!tag) {
      v.report(`unknown tag ':${a.name}' for ${what}`, a.location);
      continue;
    }
    if (positionalStarted) v.report(`tag ':${a.name}' must come before the positional arguments of ${what}`, a.location);
    if (tag.extension && !v.has(tag.extension)) v.report(`tag ':${a.name}' needs require "${tag.extension}"`, a.location);
    if (tags.has(a.name)) v.report(`tag ':${a.name}' given twice`, a.location);
    else if (tag.group && groups.has(tag.group)) v.report(`':${a.name}' cannot be combined with ':${groups.get(tag.group)}'`, a.location);
    if (tag.group) groups.set(tag.group, a.name);
    const use: TagUse = { location: a.location };
    if (tag.arg) {
      const next = list[i];
      if (!next || next.type === 'tag' || !fits(next, tag.arg)) {
        v.report(`tag ':${a.name}' needs ${KIND_NAME[tag.arg]} argument`, next?.location ?? a.location);
      } else {
        use.value = toValue(next, v);
        if (tag.arg === 'stringlist' && use.value.kind === 'string') {
          use.value = { kind: 'stringlist', values: [use.value.value], location: use.value.location };
        }
        i++;
      }
    }
    tags.set(a.name, use);
  }
  // Positional arguments (RFC 5228 §2.6.1).
  const typed: Value[] = [];
  spec.positional.forEach((p, k) => {
    const a = args[k];
    if (!a) {
      if (!p.optional) v.report(`${what} needs ${p.name} (${KIND_NAME[p.kind]})`, n.location.start.offset === n.nameLocation.start.offset ? n.nameLocation : n.location);
      return;
    }
    const ok = p.kind === 'number' ? a.kind === 'number' : p.kind === 'string' ? a.kind === 'string' : a.kind !== 'number';
    if (!ok) {
      v.report(`${what}: ${p.name} must be ${KIND_NAME[p.kind]}`, a.location);
      return;
    }
    typed.push(p.kind === 'stringlist' && a.kind === 'string' ? { kind: 'stringlist', values: [a.value], location: a.location } : a);
  });
  if (args.length > spec.positional.length) {
    v.report(`too many arguments for ${what}`, args[spec.positional.length]!.location);
  }
  // Tests (RFC 5228 §2.6.3 and §3.1).
  const tests: CNode[] = [];
  const mode = spec.tests ?? 'none';
  if (mode === 'none' && n.tests.length > 0) {
    v.report(`${what} takes no test${spec.kind === 'command' ? " (missing ';'?)" : ''}`, n.tests[0]!.location);
  } else if (mode === 'one') {
    if (n.tests.length === 0) v.report(`${what} needs a test`, n.nameLocation);
    else if (n.testList) v.report(`${what} takes a single test, not a test list (use allof or anyof)`, n.tests[0]!.location);
  } else if (mode === 'list' && n.tests.length > 0 && !n.testList) {
    v.report(`${what} needs a test list in parentheses`, n.tests[0]!.location);
  } else if (mode === 'list' && n.tests.length === 0) {
    v.report(`${what} needs a test list in parentheses`, n.nameLocation);
  }
  if (mode !== 'none') {
    for (const t of n.tests) {
      const b = buildTest(t, v);
      if (b) tests.push(b);
    }
  }
  return { kind: spec.kind, name: spec.name, spec, location: n.location, tags, args: typed, tests, block: null, data: {} };
}

export function walk(nodes: CNode[], f: (n: CNode) => void): void {
  for (const n of nodes) {
    f(n);
    walk(n.tests, f);
    if (n.block) walk(n.block, f);
  }
}

export type { Location };
