// `postern check-config [--config FILE]`: validates the config file the daemon would read (same
// lookup: --config, $POSTERN_CONFIG, ./postern.yaml, else the built-in defaults) without starting
// anything or writing anything.
//
// Checks, in order: YAML syntax (duplicate keys included), the composed schema (unknown keys,
// types, ranges), the configured TLS files (readable, PEM, matching), then every plugin's options
// against that plugin's own schema and, when valid, against the files they name (the plugin's
// `checkFiles`: the sieve plugin's scripts exist and compile), as start checks them before any
// init (`validatePluginConfig` in src/pipeline/loader.ts, when that module provides it). Each
// problem is printed on stderr as `FILE:LINE:COL: key.path: message`; exit 1 when there is any.
// A valid config prints `ok: FILE` on stdout, exit 0.
import { parseArgs } from 'node:util';
import { ConfigError, formatProblem, type ConfigProblem } from '../config/errors.js';
import { displayPath, findConfigFile, loadConfig, locateProblems, type Config } from '../config/load.js';
import { readConfiguredTls } from '../tls/certs.js';
import { EXIT, say, usageError, type CliIo } from './io.js';

export const CHECK_CONFIG_USAGE = `Usage: postern check-config [--config FILE]

Validates the config file without starting anything. Prints each problem as
FILE:LINE:COL: key.path: message and exits 1, or prints "ok: FILE" and exits 0.

  -c, --config FILE   the file to check (default: $POSTERN_CONFIG, else ./postern.yaml,
                      else the built-in defaults)
  -h, --help          this text`;

export interface CheckResult {
  /** As shown to the user; null for the built-in defaults. */
  file: string | null;
  problems: ConfigProblem[];
  config?: Config;
}

/**
 * The plugin host's option check. Its contract: resolve (or return nothing) when every plugin's
 * options are valid; report problems either as a returned list or as a thrown ConfigError, each
 * with a key path such as `plugins.1.dnsbl.zones`.
 */
type ValidatePluginConfig = (config: Config) => unknown;

export async function checkConfig(explicit: string | undefined, env: NodeJS.ProcessEnv): Promise<CheckResult> {
  const abs = findConfigFile(explicit, env);
  const file = abs && displayPath(abs);
  let config: Config;
  try {
    config = loadConfig(explicit, env);
  } catch (e) {
    if (e instanceof ConfigError) return { file, problems: e.problems };
    throw e;
  }
  const problems: ConfigProblem[] = [];
  if (config.tls) {
    try {
      await readConfiguredTls(config.tls);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems);
    }
  }
  const validate = await pluginValidator();
  if (validate) {
    try {
      const found = await validate(config);
      if (Array.isArray(found)) problems.push(...(found as ConfigProblem[]));
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else problems.push({ path: 'plugins', message: (e as Error).message });
    }
  }
  // Problems found after loading carry a key path but no line: find it in the file.
  if (abs) locateProblems(problems, abs);
  return { file, problems, config };
}

/** `validatePluginConfig` from the plugin host, or null while that module does not exist. */
async function pluginValidator(): Promise<ValidatePluginConfig | null> {
  // A variable specifier: the loader is another module's work and may not exist in this build.
  const spec = '../pipeline/loader.js';
  try {
    const mod = (await import(spec)) as { validatePluginConfig?: ValidatePluginConfig };
    return typeof mod.validatePluginConfig === 'function' ? mod.validatePluginConfig : null;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // Only the loader itself being absent is "not there yet"; a broken loader is a real error.
    if (err.code === 'ERR_MODULE_NOT_FOUND' && /pipeline[\\/]loader/.test(err.message) && !/imported from .*pipeline[\\/]loader/.test(err.message)) return null;
    throw e;
  }
}

export async function runCheckConfig(argv: string[], io: CliIo): Promise<number> {
  let values: { config?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    return usageError(io, 'check-config', (e as Error).message);
  }
  if (values.help) {
    say(io.stdout, CHECK_CONFIG_USAGE);
    return EXIT.ok;
  }
  const result = await checkConfig(values.config, io.env);
  if (result.problems.length) {
    for (const p of result.problems) say(io.stderr, formatProblem(p, result.file));
    const n = result.problems.length;
    say(io.stderr, `${n} problem${n === 1 ? '' : 's'} in ${result.file ?? 'the built-in defaults'}`);
    return EXIT.failed;
  }
  say(io.stdout, `ok: ${result.file ?? 'no config file, the built-in defaults'}`);
  return EXIT.ok;
}
