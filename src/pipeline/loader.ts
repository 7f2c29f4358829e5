// Builds the plugin chain from config `plugins` (pipeline/config.ts): finds each entry's module,
// validates its options, runs init in chain order and hands the result to the runner.
//
// An entry is a name or a one-key map { name: options }. The name resolves, in this order, to:
//   1. a built-in: plugins/<name>/index.(js|ts) next to this build (works under tsx from src/
//      and after `tsc` into dist/, where the layout is dist/src and dist/plugins);
//   2. a path: "./x.js", "../x.js" or an absolute path, relative to the config file's folder;
//   3. a package name, imported as `import(name)`.
// The module's default export (or a named `plugin` export) must be a definePlugin() object.
//
// Options: the runner's own keys (`timeout`, `on_error`: commonPluginOptions) are taken out and
// checked here; the rest goes to the plugin's zod schema, then, when valid, to the plugin's own
// check against the files they name (`checkFiles`: the sieve plugin's scripts must exist and
// compile). Every problem becomes a ConfigError with its key path, e.g. "plugins.1.dnsbl.zones:
// Invalid input: expected array, received string" or "plugins.0.sieve.scripts.0: no such file:
// x.sieve", and all of them are reported at once, before any init: `postern check-config` and
// start see the same. A plugin appears at most once (its name keys the notes). If one init
// fails, the plugins already initialised are closed again before the error is thrown.
//
// Config keys read: `plugins`, and `baseDir` (where the config file lives); each plugin's init
// receives the whole config as `global`.
import { existsSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import type { Config } from '../config/load.js';
import { ConfigError, configErrorMap, formatIssues, formatPath, type ConfigProblem } from '../config/errors.js';
import { parseDuration } from '../config/units.js';
import { commonPluginOptions, type PluginEntry } from './config.js';
import { createPipeline, DEFAULT_HOOK_TIMEOUT_MS, type AnyPluginDefinition, type LoadedPlugin, type PipelineDeps } from './runner.js';
import type { Pipeline } from './types.js';
import { STAGES } from './plugin.js';

/** Folder holding the built-in plugins: <root>/plugins, both from src/pipeline and dist/src/pipeline. */
export const BUILTIN_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url));

const BUILTIN_NAME = /^[a-z0-9][a-z0-9-]*$/;
const HOOK_NAMES = new Set<string>([...STAGES, 'delivered', 'deferred', 'bounced']);

const commonSchema = z.object(commonPluginOptions);

/** A chain entry after validation, before init. */
export interface ValidatedEntry {
  name: string;
  def: AnyPluginDefinition;
  config: unknown;
  timeoutMs: number;
  onError: 'tempfail' | 'fail-open';
}

/** Loads, validates, initialises: the chain the daemon runs. Throws ConfigError on bad entries. */
export async function loadPipeline(config: Config, deps: PipelineDeps): Promise<Pipeline> {
  const entries = await validateEntries(config);
  const loaded: LoadedPlugin[] = [];
  try {
    for (const e of entries) {
      const state = e.def.init
        ? await e.def.init({ config: e.config, store: deps.store, directory: deps.directory, dns: deps.dns, log: deps.log.child({ plugin: e.name }), global: config })
        : undefined;
      loaded.push({ ...e, state });
    }
  } catch (err) {
    // Close what was opened, newest first, then report which plugin failed.
    for (const p of loaded.reverse()) {
      try {
        await p.def.close?.(p.state);
      } catch {
        /* the init failure is the error worth reporting */
      }
    }
    const failed = entries[loaded.length]?.name ?? '?';
    throw new Error(`plugin ${failed}: init failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return createPipeline(loaded, deps);
}

/**
 * For `postern check-config`: loads every module and validates every entry's options without
 * running init. Resolves when all is well; throws one ConfigError listing every problem.
 */
export async function validatePluginConfig(config: Config): Promise<void> {
  await validateEntries(config);
}

export async function validateEntries(config: Config): Promise<ValidatedEntry[]> {
  const problems: ConfigProblem[] = [];
  const out: ValidatedEntry[] = [];
  const seen = new Map<string, number>();
  const list = (config.plugins ?? []) as PluginEntry[];
  for (const [i, entry] of list.entries()) {
    const { name, options, path } = splitEntry(entry, i, config.baseDir);
    let def: AnyPluginDefinition;
    try {
      def = await importPlugin(name, config.baseDir);
    } catch (e) {
      problems.push({ path: formatPath(path), message: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const r = validateOptions(def, options, path);
    if (!r.ok) {
      problems.push(...r.problems);
      continue;
    }
    const prev = seen.get(def.name);
    if (prev !== undefined) {
      problems.push({ path: formatPath(path), message: `plugin "${def.name}" is already in the chain at plugins.${prev}` });
      continue;
    }
    seen.set(def.name, i);
    problems.push(...(await checkFiles(def, r.value.config, config, path)));
    out.push({ name: def.name, def, ...r.value });
  }
  if (problems.length) throw new ConfigError(problems);
  return out;
}

/**
 * Checks options against commonPluginOptions and the plugin's schema. `path` prefixes every
 * problem's key path (['plugins', 1, 'dnsbl'] in a config file). Also used by the test harness.
 */
export function validateOptions(
  def: AnyPluginDefinition,
  options: Record<string, unknown>,
  path: (string | number)[] = [],
): { ok: true; value: Omit<ValidatedEntry, 'name' | 'def'> } | { ok: false; problems: ConfigProblem[] } {
  const { timeout, on_error, ...own } = options;
  const problems: ConfigProblem[] = [];
  const common = commonSchema.safeParse({ timeout, on_error }, { error: configErrorMap, reportInput: true });
  let timeoutMs = DEFAULT_HOOK_TIMEOUT_MS;
  if (!common.success) problems.push(...formatIssues(common.error.issues, path));
  else if (common.data.on_error === 'fail-open' && def.failOpenRefused !== undefined) {
    problems.push({ path: formatPath([...path, 'on_error']), message: `${def.name} cannot fail open: ${def.failOpenRefused}` });
  }
  if (common.success && common.data.timeout !== undefined) {
    const t = typeof common.data.timeout === 'number' ? common.data.timeout : parseDuration(common.data.timeout);
    if (t === undefined || t <= 0) problems.push({ path: formatPath([...path, 'timeout']), message: `expected a duration such as 500ms, 10s or 1m, got "${String(timeout)}"` });
    else timeoutMs = t;
  }
  const parsed = def.config.safeParse(own, { error: configErrorMap, reportInput: true });
  if (!parsed.success) problems.push(...formatIssues(parsed.error.issues, path));
  if (problems.length || !parsed.success || !common.success) return { ok: false, problems };
  return { ok: true, value: { config: parsed.data, timeoutMs, onError: common.data.on_error ?? 'tempfail' } };
}

/**
 * The plugin's check of its valid options against the files they name (PluginDefinition
 * .checkFiles), its problems under `path`. Also used by the test harness.
 */
export async function checkFiles(def: AnyPluginDefinition, options: unknown, global: Config, path: (string | number)[] = []): Promise<ConfigProblem[]> {
  if (!def.checkFiles) return [];
  try {
    const found = await def.checkFiles({ config: options, global });
    return found.map((p) => ({ path: formatPath([...path, ...p.path]), message: p.message }));
  } catch (e) {
    return [{ path: formatPath(path), message: `${def.name}: cannot check its files: ${e instanceof Error ? e.message : String(e)}` }];
  }
}

function splitEntry(entry: PluginEntry, i: number, baseDir: string): { name: string; options: Record<string, unknown>; path: (string | number)[] } {
  if (typeof entry === 'string') return { name: entry, options: {}, path: ['plugins', i] };
  const [name, options] = Object.entries(entry)[0]!;
  return { name, options: options ?? {}, path: ['plugins', i, asWritten(name, baseDir)] };
}

/**
 * config/load.ts makes "./x.js" absolute; key paths show it as written again (so check-config
 * can find the line): relative to the config folder when it lies below it.
 */
function asWritten(name: string, baseDir: string): string {
  if (!isAbsolute(name)) return name;
  const rel = relative(baseDir, name);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? `./${rel.split(sep).join('/')}` : name;
}

/** Finds and imports a plugin module; throws an Error whose message is fit for a ConfigProblem. */
export async function importPlugin(name: string, baseDir: string): Promise<AnyPluginDefinition> {
  let url: string;
  let what: string;
  const builtin = BUILTIN_NAME.test(name) ? builtinFile(name) : null;
  if (builtin) {
    url = pathToFileURL(builtin).href;
    what = `built-in plugin "${name}"`;
  } else if (name.startsWith('./') || name.startsWith('../') || isAbsolute(name)) {
    const file = resolve(baseDir, name);
    if (!existsSync(file)) throw new Error(`plugin file not found: ${file}`);
    url = pathToFileURL(file).href;
    what = `plugin file ${file}`;
  } else {
    url = name;
    what = `plugin package "${name}"`;
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!builtin && url === name && (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND')) {
      throw new Error(`unknown plugin "${name}": not a built-in, a path (./x.js) or an installed package`);
    }
    throw new Error(`cannot load ${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const def = (mod.default ?? mod.plugin) as unknown;
  const problem = shapeProblem(def);
  if (problem) throw new Error(`${what} is not a plugin: ${problem}`);
  return def as AnyPluginDefinition;
}

function builtinFile(name: string): string | null {
  // Compiled output first (dist/plugins/<name>/index.js); under tsx, the .ts source.
  for (const f of ['index.js', 'index.ts']) {
    const p = resolve(BUILTIN_DIR, name, f);
    if (existsSync(p)) return p;
  }
  return null;
}

function shapeProblem(def: unknown): string | null {
  if (typeof def !== 'object' || def === null) return 'the module has no default export made with definePlugin()';
  const d = def as Partial<AnyPluginDefinition>;
  if (typeof d.name !== 'string' || !d.name) return '`name` is missing';
  if (typeof (d.config as { safeParse?: unknown } | undefined)?.safeParse !== 'function') return '`config` is not a zod schema';
  if (typeof d.hooks !== 'object' || d.hooks === null) return '`hooks` is missing';
  for (const [k, v] of Object.entries(d.hooks)) {
    if (!HOOK_NAMES.has(k)) return `unknown hook "${k}"`;
    if (typeof v !== 'function') return `hook "${k}" is not a function`;
  }
  if (d.init !== undefined && typeof d.init !== 'function') return '`init` is not a function';
  if (d.checkFiles !== undefined && typeof d.checkFiles !== 'function') return '`checkFiles` is not a function';
  if (d.close !== undefined && typeof d.close !== 'function') return '`close` is not a function';
  return null;
}
