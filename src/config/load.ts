// Reads the YAML config file, validates it with the composed schema and resolves relative paths
// against the file's folder. Only this module reads the environment (POSTERN_CONFIG) and files.
// Lookup order (CONTRACT.md): --config FILE, then $POSTERN_CONFIG, then ./postern.yaml if present,
// else the embedded defaults.
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { configSchema, type ParsedConfig } from './schema.js';
import { DEFAULT_LISTEN } from '../smtp/config.js';
import { ConfigError, formatIssues } from './errors.js';

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

export function findConfigFile(explicit?: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (explicit) return resolve(explicit);
  if (env.POSTERN_CONFIG) return resolve(env.POSTERN_CONFIG);
  const local = resolve('postern.yaml');
  return existsSync(local) ? local : null;
}

/** Parses and validates YAML text; throws ConfigError listing every problem with its key path. */
export function parseConfig(text: string, file: string | null): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}` })));
  }
  const raw = (doc.toJS() ?? {}) as unknown;
  return fromObject(raw, file);
}

export function fromObject(raw: unknown, file: string | null): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(formatIssues(result.error.issues));
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
    throw new ConfigError([{ path: '', message: `cannot read ${file}: ${(e as Error).message}` }]);
  }
  return parseConfig(text, file);
}
