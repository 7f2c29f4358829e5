// Reads the YAML config file, validates it with the composed schema and resolves relative paths
// against the file's folder. Only this module reads the environment (POSTERN_CONFIG) and files.
//
// Lookup order (CONTRACT.md): --config FILE, then $POSTERN_CONFIG, then ./postern.yaml if present,
// else the built-in defaults (the embedded mode: every listener on its unprivileged default port,
// data under ./data, local domain "localhost").
//
// Paths resolved here against the config file's folder (the working directory without a file):
// data_dir, tls.cert, tls.key, mailbox.path (unless it starts with a {placeholder}). Plugin
// entries written as paths (./x.js, ../x.js) and paths inside a plugin's options are resolved by
// the plugin host against `Config.baseDir`, so that error key paths keep the names as written.
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { configSchema, type ParsedConfig } from './schema.js';
import { suggestKey } from './suggest.js';
import { DEFAULT_LISTEN } from '../smtp/config.js';
import { CONFIG_PARSE, ConfigError, formatIssues, parsePath, sortProblems, type ConfigProblem, type Locate } from './errors.js';

export interface Config extends Omit<ParsedConfig, 'listen' | 'hostname'> {
  hostname: string;
  /** Absolute. */
  data_dir: string;
  listen: NonNullable<ParsedConfig['listen']>;
  /** Absolute path of the file read, or null for the built-in defaults. */
  configFile: string | null;
  /** Folder relative paths in the file resolve against (the file's, else the working directory). */
  baseDir: string;
}

/** Local domains when no config file is given: mail to user@localhost is delivered locally. */
export const DEFAULT_LOCAL_DOMAINS = ['localhost'];

export function findConfigFile(explicit?: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (explicit) return resolve(explicit);
  if (env.POSTERN_CONFIG) return resolve(env.POSTERN_CONFIG);
  const local = resolve('postern.yaml');
  return existsSync(local) ? local : null;
}

/** How a file name is shown in messages: relative to the working directory when inside it. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

/**
 * Parses and validates YAML text; throws ConfigError listing every problem with its key path and
 * line. An empty file (or one with only comments) is an empty map: every default applies, and no
 * listener is on (a file lists the listeners it wants).
 */
export function parseConfig(text: string, file: string | null): Config {
  const shown = file && displayPath(file);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  if (doc.errors.length) {
    throw new ConfigError(
      doc.errors.map((e): ConfigProblem => ({ path: '', message: yamlMessage(e.code, e.message, text, e.pos[0]), ...at(e.pos[0]) })),
      shown,
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    // Unresolved alias, alias bomb. The library gives no position: find the alias by its name.
    const message = (e as Error).message;
    const alias = /: ([^\s:]+)$/.exec(message)?.[1];
    const offset = alias ? text.search(new RegExp(`\\*${alias.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w-])`)) : -1;
    throw new ConfigError([{ path: '', message: `YAML: ${message}`, ...at(offset >= 0 ? offset : undefined) }], shown);
  }
  return fromObject(raw, file, locator(doc, lineCounter));
}

/** Validates an already parsed config object (tests, the REST dry-run). */
export function fromObject(raw: unknown, file: string | null, locate?: Locate): Config {
  const result = configSchema.safeParse(raw, CONFIG_PARSE);
  if (!result.success) throw new ConfigError(sortProblems(formatIssues(result.error.issues, [], locate, (path, key) => suggestKey(configSchema, path, key))), file && displayPath(file));
  const c = result.data;
  const baseDir = file ? dirname(file) : process.cwd();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  return {
    ...c,
    hostname: c.hostname ?? osHostname(),
    data_dir: abs(c.data_dir),
    // No config file at all: every listener on its default port. A file lists what it wants.
    listen: c.listen ?? (file === null ? structuredClone(DEFAULT_LISTEN) : {}),
    tls: c.tls ? { cert: abs(c.tls.cert), key: abs(c.tls.key) } : undefined,
    domains: { ...c.domains, local: file === null && c.domains.local.length === 0 ? [...DEFAULT_LOCAL_DOMAINS] : c.domains.local },
    mailbox: { ...c.mailbox, path: c.mailbox.path.startsWith('{') ? c.mailbox.path : abs(c.mailbox.path) },
    configFile: file,
    baseDir,
  } as Config;
}

export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): Config {
  const file = findConfigFile(explicit, env);
  if (file === null) return fromObject({}, null);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory' : err.message;
    throw new ConfigError([{ path: '', message: `cannot read the config file: ${why}` }], displayPath(file));
  }
  return parseConfig(text, file);
}

/** The yaml library's messages, shortened; a duplicate key names the key. */
function yamlMessage(code: string, message: string, text: string, offset: number | undefined): string {
  if (code === 'DUPLICATE_KEY' && offset !== undefined) {
    const key = /^["']?([^"':\n]+)/.exec(text.slice(offset))?.[1]?.trim();
    if (key) return `YAML: duplicate key "${key}"`;
  }
  return `YAML: ${message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`;
}

/**
 * Problems found after loading (plugin options and the files they name, TLS files) carry a key
 * path but no line: gives each the line and column of its key in `file`, in place. A file that
 * can no longer be read leaves them as they are.
 */
export function locateProblems(problems: ConfigProblem[], file: string): void {
  if (!problems.some((p) => p.line === undefined && p.path)) return;
  let locate: Locate;
  try {
    locate = locatorFor(readFileSync(file, 'utf8'));
  } catch {
    return;
  }
  for (const p of problems) {
    if (p.line !== undefined || !p.path) continue;
    const pos = locate(parsePath(p.path));
    if (pos) Object.assign(p, { line: pos.line, column: pos.column });
  }
}

/**
 * A locator for problems found after loading (plugin options, TLS files): their key path to a
 * line in `text`. Undefined positions when the text does not parse.
 */
export function locatorFor(text: string): Locate {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  return doc.errors.length ? () => undefined : locator(doc, lineCounter);
}

/**
 * Maps a raw key path to the position of its key in the file (or of the list item), walking down
 * as far as the path exists: a missing key points at its parent.
 */
function locator(doc: Document, lc: LineCounter): Locate {
  return (path) => {
    let node: unknown = doc.contents;
    let offset: number | undefined = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0];
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
        if (!pair) break;
        offset = (pair.key as { range?: [number, number, number] } | null)?.range?.[0] ?? offset;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg] as { range?: [number, number, number] } | undefined;
        if (!item) break;
        offset = item.range?.[0] ?? offset;
        node = item;
      } else break;
    }
    if (offset === undefined) return undefined;
    const { line, col } = lc.linePos(offset);
    return { line, column: col };
  };
}
