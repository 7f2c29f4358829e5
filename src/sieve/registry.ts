// The extension registry: every command, test and tag the engine knows, declared as data
// (name, kind, capability it needs, tags, positional arguments, test and block shape) plus the
// optional compile-time `check` and the runtime `run`/`test`. Validation passes read the specs;
// the interpreter calls `run`/`test`. RFC 5228 §3 (control), §4 (actions), §5 (tests); each
// extension module in extensions/ registers its own pieces (STYLE.md, Sieve).
import type { Location, SieveError } from './ast.js';
import type { ActionState } from './actions.js';
import type { SieveConfig } from './config.js';
import type { SieveLimits } from './limits.js';
import type { MatchSpec } from './match.js';
import type { HeaderField, MailAddress, MimePart } from './message.js';

export type ArgKind = 'string' | 'stringlist' | 'number';

export interface TagSpec {
  name: string;
  /** The value that must follow the tag. */
  arg?: ArgKind;
  /** At most one tag of a group per command (match type, comparator, address part, …). */
  group?: string;
  /** Capability that must be required for the tag (e.g. :copy needs "copy"). */
  extension?: string;
}

export interface PositionalSpec {
  name: string;
  kind: ArgKind;
  optional?: boolean;
}

export type Value =
  | { kind: 'string'; value: string; location: Location }
  | { kind: 'stringlist'; values: string[]; location: Location }
  | { kind: 'number'; value: number; location: Location };

export interface TagUse {
  location: Location;
  value?: Value;
}

/** A validated command or test: tags resolved, positional arguments typed. */
export interface CNode {
  kind: 'command' | 'test';
  name: string;
  spec: CommandSpec;
  location: Location;
  tags: Map<string, TagUse>;
  args: Value[];
  tests: CNode[];
  block: CNode[] | null;
  /** What `check` precomputed (match spec, compiled keys, …). */
  data: Record<string, unknown>;
}

export interface ValidateCtx {
  required: Set<string>;
  limits: SieveLimits;
  registry: Registry;
  report(message: string, location: Location): void;
  has(capability: string): boolean;
}

export interface CommandSpec {
  name: string;
  kind: 'command' | 'test';
  /** Capability that must be required; undefined for RFC 5228 base commands. */
  extension?: string;
  tags: TagSpec[];
  positional: PositionalSpec[];
  tests?: 'none' | 'one' | 'list';
  block?: 'none' | 'required';
  /** Compile-time checks beyond shape; report against node locations. */
  check?(node: CNode, v: ValidateCtx): void;
  run?(node: CNode, rt: Runtime): void | Promise<void>;
  test?(node: CNode, rt: Runtime): boolean | Promise<boolean>;
}

export interface Envelope {
  /** Reverse path without brackets; "" for the null sender. */
  from: string;
  /** The recipient this run is for. */
  to: string;
  /** Authenticated user, if any (RFC 5228 envelope "auth" is not standard; kept for hosts). */
  auth?: string;
}

/** Every outside fact the runtime needs. All optional; absent means "not available". */
export interface SieveHost {
  /** RFC 5490 mailboxexists. Default: only INBOX exists. */
  mailboxExists?(name: string): boolean | Promise<boolean>;
  /** RFC 7352: true if the id was seen within `seconds` under `handle`; the host remembers it. */
  duplicate?(q: { handle: string; id: string; seconds: number; last: boolean }): boolean | Promise<boolean>;
  /** RFC 6609: the text of an included script, or undefined when it does not exist. */
  include?(name: string, location: 'personal' | 'global'): string | undefined | Promise<string | undefined>;
  /** RFC 5235: scanner results from the pipeline; when absent the configured headers are read. */
  spamScore?(): { score: number; max: number } | undefined;
  virusLevel?(): number | undefined;
  /** Clock for date/currentdate (RFC 5260) and vacation; default: now. */
  now?(): Date;
}

export interface Runtime {
  limits: SieveLimits;
  config: SieveConfig;
  host: SieveHost;
  envelope: Envelope;
  /** RFC 5183 environment items. */
  environment: Record<string, string>;
  /** Addresses that belong to the user (vacation :addresses defaults). */
  userAddresses: string[];
  /** Capabilities required by the script currently running. */
  required: Set<string>;
  actions: ActionState;
  /** Header fields as edited so far (editheader). */
  headers: HeaderField[];
  headersEdited: boolean;
  /** Fields of `block` (rt.headers or a MIME part's) with this name, any case; cached per run. Do not modify the array. */
  fieldsNamed(block: HeaderField[], name: string): HeaderField[];
  /** An address list parsed (message.ts parseAddressList), cached per run. Do not modify it. */
  addresses(text: string): MailAddress[];
  rawSize: number;
  body: Buffer;
  mime(): MimePart;
  /** RFC 5703 replace of the whole message: the new MIME tree (rt.body and rt.headers are set by the caller). */
  setMime(root: MimePart): void;
  /** The part foreverypart is visiting (RFC 5703 §3), or null. */
  currentPart: MimePart | null;
  /** imap4flags internal variable (RFC 5232 §3). */
  flags: string[];
  /** Per-extension state. */
  ext: Map<string, unknown>;
  /** RFC 5229 variables of the running script (lower-cased names) and match variables. */
  vars: Map<string, string>;
  matchVars: string[];
  /** RFC 6609 §3.4 global variables and the names the running script declared global. */
  globals: Map<string, string>;
  globalNames: Set<string>;
  setVar(name: string, value: string): void;
  getVar(name: string): string | undefined;
  /** Runs another compiled script in this run (include), sharing actions and globals. */
  runIncluded(script: import('./compile.js').CompiledScript, location: Location): Promise<void>;
  includeDepth: number;
  includeCount: number;
  includedOnce: Set<string>;
  str(v: Value | undefined): string;
  list(v: Value | undefined): string[];
  tagStr(node: CNode, tag: string): string | undefined;
  match(node: CNode, values: string[], keys: string[]): boolean;
  matchSpec(node: CNode): MatchSpec;
  step(node: CNode): void;
  fail(message: string, location: Location): never;
  runBlock(cmds: CNode[]): Promise<void>;
  /** Await the result: a synchronous test gives its boolean directly. */
  evalTest(t: CNode): boolean | Promise<boolean>;
  /** Expands variables (RFC 5229) when the script required them. */
  expand(s: string): string;
}

export interface ExtensionDef {
  /** Capability strings this module provides (require / ihave names). */
  capabilities: string[];
  register(reg: Registry): void;
}

export class Registry {
  readonly capabilities = new Set<string>();
  readonly commands = new Map<string, CommandSpec>();

  use(ext: ExtensionDef): this {
    for (const c of ext.capabilities) this.capabilities.add(c);
    ext.register(this);
    return this;
  }

  /** By kind, so a lookup while compiling builds no key string. */
  private readonly byKind = { command: new Map<string, CommandSpec>(), test: new Map<string, CommandSpec>() };

  add(spec: CommandSpec): void {
    this.commands.set(`${spec.kind}:${spec.name}`, spec);
    this.byKind[spec.kind].set(spec.name, spec);
  }

  command(name: string): CommandSpec | undefined {
    return this.byKind.command.get(name);
  }

  test(name: string): CommandSpec | undefined {
    return this.byKind.test.get(name);
  }

  /** Adds tags to a command or test another module declared (e.g. :copy on redirect). */
  addTags(kind: 'command' | 'test', name: string, tags: TagSpec[]): void {
    const spec = this.commands.get(`${kind}:${name}`);
    if (!spec) throw new Error(`addTags: no ${kind} ${name}`);
    spec.tags.push(...tags);
  }

  /** Wraps a command's check so an extension can add its own checks (e.g. :create on fileinto). */
  addCheck(kind: 'command' | 'test', name: string, check: (node: CNode, v: ValidateCtx) => void): void {
    const spec = this.commands.get(`${kind}:${name}`);
    if (!spec) throw new Error(`addCheck: no ${kind} ${name}`);
    const prev = spec.check;
    spec.check = (n, v) => {
      prev?.(n, v);
      check(n, v);
    };
  }
}

// ---- Shared tag sets (RFC 5228 §2.7) ----

export const comparatorTag = (): TagSpec => ({ name: 'comparator', arg: 'string', group: 'comparator' });

export const matchTags = (): TagSpec[] => [
  { name: 'is', group: 'match' },
  { name: 'contains', group: 'match' },
  { name: 'matches', group: 'match' },
  { name: 'regex', group: 'match', extension: 'regex' },
  { name: 'count', group: 'match', arg: 'string', extension: 'relational' },
  { name: 'value', group: 'match', arg: 'string', extension: 'relational' },
];

export const addressPartTags = (): TagSpec[] => [
  { name: 'all', group: 'address-part' },
  { name: 'localpart', group: 'address-part' },
  { name: 'domain', group: 'address-part' },
  { name: 'user', group: 'address-part', extension: 'subaddress' },
  { name: 'detail', group: 'address-part', extension: 'subaddress' },
];

export class SieveRuntimeError extends Error {
  constructor(
    message: string,
    readonly location: Location | undefined,
  ) {
    super(message);
  }
  toSieveError(): SieveError {
    return { line: this.location?.start.line ?? 1, column: this.location?.start.column ?? 1, message: this.message };
  }
}

/** Control flow signals (not errors): stop (RFC 5228 §3.3), return (RFC 6609), break (RFC 5703). */
export class StopSignal {}
export class ReturnSignal {}
export class BreakSignal {
  constructor(readonly name: string | undefined) {}
}
