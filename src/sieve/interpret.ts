// The Sieve runtime (RFC 5228 §2.10, §3-§5 and the extensions in extensions/). It does no I/O:
// every outside fact (does a mailbox exist, was this message seen, what is in an included
// script) comes from the SieveHost, and the result is data, in CONTRACT.md's `sieve test` shape.
// Delivery (or the gateway) performs the actions.
//
// run() never throws for script problems: a runtime error (conflicting actions, too many
// redirects, a limit, the `error` command) gives status "runtime-error", no actions and the
// implicit keep (RFC 5228 §2.10.6). Config keys read: sieve.vacation, sieve.spamtest,
// sieve.virustest, sieve.limits.max_redirects (via the extensions and limits).
import type { Location, SieveError } from './ast.js';
import { ActionState, type SieveAction } from './actions.js';
import type { CompiledScript } from './compile.js';
import { sieveSchema, type SieveConfig } from './config.js';
import { matchValues, prepareKeys, preparedFor, type MatchSpec, type PreparedKeys } from './match.js';
import { buildMimeTree, parseAddressList, splitMessage, type HeaderField, type MailAddress, type MimePart } from './message.js';
import { rewrittenMessage } from './mime-write.js';
import { RegexError } from './regex.js';
import {
  BreakSignal,
  ReturnSignal,
  SieveRuntimeError,
  StopSignal,
  type CNode,
  type Envelope,
  type Runtime,
  type SieveHost,
  type Value,
} from './registry.js';
import type { SieveLimits } from './limits.js';

export interface RunOptions {
  config?: SieveConfig;
  /** RFC 5183 environment items (domain, host, location, phase, remote-host, remote-ip, …). */
  environment?: Record<string, string>;
  /** The user's own addresses (vacation, RFC 5230 §4.5). Default: the envelope recipient. */
  userAddresses?: string[];
  limits?: Partial<SieveLimits>;
}

export interface StoredCopy {
  mailbox: string;
  headers: [string, string][];
}

export interface SieveResult {
  status: 'ok' | 'runtime-error';
  actions: SieveAction[];
  implicitKeep: boolean;
  implicitKeepFlags: string[];
  /** Only when the script edited headers (editheader). */
  stored?: StoredCopy[];
  errors: SieveError[];
  /** The header fields after editheader, for whoever stores or redirects the message. */
  headers: HeaderField[];
  /** Script line of each action in `actions` (same order), for traces. Not in the CLI JSON. */
  lines?: number[];
  /** The whole message after RFC 5703 replace/enclose (header edits included); absent when neither ran. Not in the CLI JSON. */
  message?: Buffer;
  /** Tests that matched, in order (at most MAX_RECORDED_MATCHES), for traces. Not in the CLI JSON. */
  matches?: SieveMatch[];
}

/** One test that matched: its line, name, the header(s) it looked at and the value that matched. */
export interface SieveMatch {
  line: number;
  test: string;
  header?: string;
  value?: string;
  /** Index of the action recorded after this match (actions before it: this many). */
  action: number;
}

const MAX_RECORDED_MATCHES = 100;

const NO_FIELDS: HeaderField[] = [];
const VAR_REF = /\$\{([^{}]*)\}/g;
const VAR_NAME = /^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$/;

class Interp implements Runtime {
  limits: SieveLimits;
  config: SieveConfig;
  host: SieveHost;
  envelope: Envelope;
  environment: Record<string, string>;
  userAddresses: string[];
  required: Set<string>;
  actions: ActionState;
  headers: HeaderField[];
  rawSize: number;
  body: Buffer;
  currentPart: MimePart | null = null;
  flags: string[] = [];
  ext = new Map<string, unknown>();
  vars = new Map<string, string>();
  matchVars: string[] = [];
  globals = new Map<string, string>();
  globalNames = new Set<string>();
  includeDepth = 0;
  includeCount = 0;
  includedOnce = new Set<string>();
  private steps = 0;
  private mimeRoot: MimePart | null = null;
  private readonly originalHeaders: HeaderField[];
  private edited = false;
  /** Per run: header fields by lower-cased name, per header block; cleared on every edit. */
  private fieldIndex = new WeakMap<HeaderField[], Map<string, HeaderField[]>>();
  /** Per run: parsed address lists (envelope parts, header values). */
  private readonly addressCache = new Map<string, MailAddress[]>();

  constructor(script: CompiledScript, raw: Buffer, envelope: Envelope, host: SieveHost, opts: RunOptions) {
    this.config = opts.config ?? sieveSchema.parse({});
    this.limits = { ...script.limits, maxRedirects: this.config.limits.max_redirects, ...(opts.limits ?? {}) };
    this.host = host;
    this.envelope = envelope;
    this.environment = opts.environment ?? {};
    this.userAddresses = opts.userAddresses ?? (envelope.to ? [envelope.to] : []);
    this.required = script.required;
    this.actions = new ActionState(this.limits);
    const split = splitMessage(raw);
    this.originalHeaders = split.headers;
    // Fields are never changed in place (editheader adds and removes whole fields), so the run's
    // list can share them with the original one.
    this.headers = split.headers.slice();
    this.body = split.body;
    this.rawSize = raw.length;
  }

  mime(): MimePart {
    this.mimeRoot ??= buildMimeTree(this.originalHeaders, this.body, this.limits);
    return this.mimeRoot;
  }

  setMime(root: MimePart): void {
    this.mimeRoot = root;
  }

  get headersEdited(): boolean {
    return this.edited;
  }

  /** Every header edit sets this, which also drops the run's field index. */
  set headersEdited(v: boolean) {
    this.edited = v;
    this.fieldIndex = new WeakMap();
  }

  fieldsNamed(block: HeaderField[], name: string): HeaderField[] {
    let index = this.fieldIndex.get(block);
    if (!index) {
      index = new Map();
      for (const f of block) {
        const k = f.name.toLowerCase();
        const list = index.get(k);
        if (list) list.push(f);
        else index.set(k, [f]);
      }
      this.fieldIndex.set(block, index);
    }
    return index.get(name.toLowerCase()) ?? NO_FIELDS;
  }

  addresses(text: string): MailAddress[] {
    let a = this.addressCache.get(text);
    if (!a) {
      a = parseAddressList(text);
      this.addressCache.set(text, a);
    }
    return a;
  }

  fail(message: string, location: Location): never {
    throw new SieveRuntimeError(message, location);
  }

  step(node: CNode): void {
    if (++this.steps > this.limits.maxSteps) this.fail(`script exceeded the step limit (${this.limits.maxSteps})`, node.location);
  }

  getVar(name: string): string | undefined {
    const n = name.toLowerCase();
    if (this.globalNames.has(n) || n.startsWith('global.')) return this.globals.get(n.replace(/^global\./, ''));
    return this.vars.get(n);
  }

  setVar(name: string, value: string): void {
    const n = name.toLowerCase();
    // RFC 5229 §6: values may be truncated to an implementation limit.
    const v = value.length > this.limits.maxVariableSize ? value.slice(0, this.limits.maxVariableSize) : value;
    if (this.globalNames.has(n) || n.startsWith('global.')) {
      this.globals.set(n.replace(/^global\./, ''), v);
      return;
    }
    if (!this.vars.has(n) && this.vars.size >= this.limits.maxVariables) {
      throw new SieveRuntimeError(`too many variables (limit ${this.limits.maxVariables})`, undefined);
    }
    this.vars.set(n, v);
  }

  /** RFC 5229 §3: one pass, no re-expansion; unknown variables are "", bad references kept. */
  expand(s: string): string {
    if (!this.required.has('variables') || !s.includes('${')) return s;
    const out = s.replace(VAR_REF, (whole, name: string) => {
      if (!VAR_NAME.test(name)) return whole;
      if (/^[0-9]+$/.test(name)) return this.matchVars[Number(name)] ?? '';
      const lower = name.toLowerCase();
      if (lower.includes('.') && !lower.startsWith('global.')) return whole; // unknown namespace
      return this.getVar(lower) ?? '';
    });
    return out.length > this.limits.maxStringLength ? out.slice(0, this.limits.maxStringLength) : out;
  }

  str(v: Value | undefined): string {
    if (!v) return '';
    if (v.kind === 'string') return this.expand(v.value);
    if (v.kind === 'stringlist') return this.expand(v.values[0] ?? '');
    return String(v.value);
  }

  list(v: Value | undefined): string[] {
    if (!v) return [];
    if (v.kind === 'string') return [this.expand(v.value)];
    if (v.kind === 'stringlist') return v.values.map((x) => this.expand(x));
    return [String(v.value)];
  }

  tagStr(node: CNode, tag: string): string | undefined {
    const t = node.tags.get(tag);
    return t?.value ? this.str(t.value) : undefined;
  }

  matchSpec(node: CNode): MatchSpec {
    return (node.data.match as MatchSpec | undefined) ?? { type: 'is', comparator: 'i;ascii-casemap' };
  }

  match(node: CNode, values: string[], keys: string[]): boolean {
    const spec = this.matchSpec(node);
    const capture = this.required.has('variables') && (spec.type === 'matches' || spec.type === 'regex');
    // Keys prepared at compile time (literal keys), or remembered from the last run of this test
    // (keys from variables): folded and compiled once, not per value.
    let prepared = node.data.prepared as PreparedKeys | undefined;
    if (!preparedFor(prepared, keys) && spec.type !== 'count') {
      try {
        node.data.prepared = prepared = prepareKeys(spec, keys, this.limits);
      } catch (e) {
        if (e instanceof RegexError) return false;
        throw e;
      }
    }
    try {
      const ok = matchValues(spec, values, keys, this.limits, capture ? (g) => (this.matchVars = g) : undefined, prepared);
      if (ok && this.matched.length < MAX_RECORDED_MATCHES) this.recordMatch(node, spec, values, keys, prepared);
      return ok;
    } catch (e) {
      // A key built from variables may not compile; it then matches nothing.
      if (e instanceof RegexError) return false;
      throw e;
    }
  }

  /** Tests that matched, for traces (SieveResult.matches): which test, which header, which value. */
  matched: SieveMatch[] = [];

  private recordMatch(node: CNode, spec: MatchSpec, values: string[], keys: string[], prepared: PreparedKeys | undefined): void {
    let value: string | undefined;
    if (spec.type !== 'count') value = values.length === 1 ? values[0] : values.find((v) => matchValues(spec, [v], keys, this.limits, undefined, prepared));
    const header = node.name === 'header' || node.name === 'address' ? this.list(node.args[0]).join(', ') : undefined;
    this.matched.push({
      line: node.location.start.line,
      test: node.name,
      ...(header ? { header } : {}),
      ...(value !== undefined ? { value: value.length > 200 ? `${value.slice(0, 200)}…` : value } : {}),
      action: this.actions.entries.length,
    });
  }

  // Tests and commands are mostly synchronous; only a result that is a promise is awaited, so a
  // plain `if header …` costs no extra turn of the microtask queue.
  evalTest(t: CNode): boolean | Promise<boolean> {
    this.step(t);
    if (!t.spec.test) this.fail(`test '${t.name}' is not implemented`, t.location);
    return t.spec.test(t, this);
  }

  async runBlock(cmds: CNode[]): Promise<void> {
    let chainDone = true;
    for (const n of cmds) {
      this.step(n);
      switch (n.name) {
        case 'if': {
          const r = this.evalTest(n.tests[0]!);
          chainDone = typeof r === 'boolean' ? r : await r;
          if (chainDone && n.block && n.block.length > 0) await this.runBlock(n.block);
          break;
        }
        case 'elsif':
          if (!chainDone) {
            const r = this.evalTest(n.tests[0]!);
            chainDone = typeof r === 'boolean' ? r : await r;
            if (chainDone && n.block && n.block.length > 0) await this.runBlock(n.block);
          }
          break;
        case 'else':
          if (!chainDone && n.block && n.block.length > 0) await this.runBlock(n.block);
          chainDone = true;
          break;
        default: {
          if (!n.spec.run) this.fail(`command '${n.name}' is not implemented`, n.location);
          const p = n.spec.run(n, this);
          if (p) await p;
        }
      }
    }
  }

  async runIncluded(script: CompiledScript, location: Location): Promise<void> {
    if (this.includeDepth >= this.limits.maxIncludeDepth) this.fail(`include nested too deeply (limit ${this.limits.maxIncludeDepth})`, location);
    if (++this.includeCount > this.limits.maxIncludes) this.fail(`too many includes (limit ${this.limits.maxIncludes})`, location);
    const saved = { required: this.required, vars: this.vars, globalNames: this.globalNames, matchVars: this.matchVars };
    this.required = script.required;
    this.vars = new Map();
    this.globalNames = new Set();
    this.matchVars = [];
    this.includeDepth++;
    try {
      await this.runBlock(script.commands);
    } catch (e) {
      if (!(e instanceof ReturnSignal)) throw e;
    } finally {
      this.includeDepth--;
      Object.assign(this, saved);
    }
  }
}

/**
 * Runs a compiled script against a message (raw octets) for one recipient. Call order: compile()
 * once, run() per message and recipient. The host's methods may be async.
 */
export async function run(script: CompiledScript, message: Buffer | string, envelope: Envelope, host: SieveHost = {}, opts: RunOptions = {}): Promise<SieveResult> {
  const raw = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  const rt = new Interp(script, raw, envelope, host, opts);
  try {
    try {
      await rt.runBlock(script.commands);
    } catch (e) {
      if (!(e instanceof StopSignal) && !(e instanceof ReturnSignal)) throw e;
    }
  } catch (e) {
    if (e instanceof SieveRuntimeError) {
      return { status: 'runtime-error', actions: [], implicitKeep: true, implicitKeepFlags: [], errors: [e.toSieveError()], headers: rt.headers };
    }
    if (e instanceof BreakSignal) {
      return { status: 'runtime-error', actions: [], implicitKeep: true, implicitKeepFlags: [], errors: [{ line: 1, column: 1, message: 'break outside foreverypart' }], headers: rt.headers };
    }
    throw e;
  }
  const actions = rt.actions.list();
  // RFC 5228 §4: the implicit keep is a keep; when the message is already stored in INBOX the
  // two are one action.
  const inboxStored = actions.some((a) => a.type === 'keep' || (a.type === 'fileinto' && a.mailbox.toUpperCase() === 'INBOX'));
  const implicitKeep = rt.actions.implicitKeep && !inboxStored;
  const result: SieveResult = {
    status: 'ok',
    actions,
    implicitKeep,
    implicitKeepFlags: implicitKeep ? [...rt.flags] : [],
    errors: [],
    headers: rt.headers,
    lines: rt.actions.entries.map((e) => e.location.start.line),
    ...(rt.matched.length ? { matches: rt.matched } : {}),
  };
  if (rt.headersEdited) result.stored = rt.actions.stored(rt.headers, implicitKeep);
  // RFC 5703 replace/enclose changed the message itself: the bytes to store or redirect.
  const rewritten = rewrittenMessage(rt);
  if (rewritten) result.message = rewritten;
  return result;
}

export type { SieveAction, Envelope, SieveHost };
