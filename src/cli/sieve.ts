// `postern sieve check FILE…` and `postern sieve test …` (CONTRACT.md, "Commands" and
// "`sieve test` output"). check compiles each file and prints `FILE:LINE:COL: message` per error
// (exit 1 if any). test runs a script for one recipient in the per-user delivery context and
// prints the actions: with --json exactly one JSON object, else one action a line. The message
// file is used byte for byte; only INBOX exists; the duplicate memory starts empty; included
// scripts (RFC 6609) are read from the script's folder as NAME.sieve ("global" ones from its
// "global/" subfolder). Exit codes (src/cli/io.ts): 0 compiled, 1 compile error or unreadable
// file, 2 usage error. Config keys read: `sieve` (from --config FILE, else the usual lookup,
// unless the caller passes a loaded config).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import type { SieveAction } from '../sieve/actions.js';
import { compile } from '../sieve/compile.js';
import { compileOptions, type SieveConfig } from '../sieve/config.js';
import { run, type SieveResult } from '../sieve/interpret.js';
import type { SieveHost } from '../sieve/registry.js';
import { EXIT, say } from './io.js';

export const SIEVE_USAGE = `Usage: postern sieve check [--config FILE] FILE...
       postern sieve test --script FILE --message FILE --from ADDR --to ADDR [--config FILE] [--json]`;

export interface SieveCommandIo {
  stdout: Writable;
  stderr: Writable;
  env?: NodeJS.ProcessEnv;
  /** A loaded config (its `sieve` section); without it, --config FILE or the usual lookup. */
  config?: { sieve: SieveConfig };
}

function readText(file: string): string {
  return readFileSync(file, 'utf8');
}

function loadSieveConfig(io: SieveCommandIo, explicit: string | undefined): SieveConfig {
  if (io.config && explicit === undefined) return io.config.sieve;
  return loadConfig(explicit, io.env ?? process.env).sieve;
}

async function check(argv: string[], io: SieveCommandIo): Promise<number> {
  let files: string[];
  let explicit: string | undefined;
  try {
    const parsed = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true, allowPositionals: true });
    files = parsed.positionals;
    explicit = parsed.values.config;
  } catch (e) {
    say(io.stderr, `postern sieve check: ${(e as Error).message}`);
    say(io.stderr, SIEVE_USAGE);
    return EXIT.usage;
  }
  // With --config (or a config the caller loaded) the site's sieve.extensions and limits apply, as
  // in the daemon; without one, every extension this build has.
  const options = explicit !== undefined || io.config ? compileOptions(loadSieveConfig(io, explicit)) : {};
  if (files.length === 0) {
    say(io.stderr, 'postern sieve check: no FILE given');
    say(io.stderr, SIEVE_USAGE);
    return EXIT.usage;
  }
  let failed = false;
  for (const f of files) {
    let text: string;
    try {
      text = readText(f);
    } catch (e) {
      say(io.stderr, `${f}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      failed = true;
      continue;
    }
    const r = compile(text, options);
    if (!r.ok) {
      failed = true;
      for (const e of r.errors) say(io.stderr, `${f}:${e.line}:${e.column}: ${e.message}`);
    }
  }
  return failed ? EXIT.failed : EXIT.ok;
}

/** The CONTRACT.md JSON shape (field order kept stable). */
export function resultJson(r: SieveResult): Record<string, unknown> {
  const out: Record<string, unknown> = {
    status: r.status,
    errors: r.errors,
    actions: r.actions,
    implicitKeep: r.implicitKeep,
    implicitKeepFlags: r.implicitKeepFlags,
  };
  if (r.stored) out.stored = r.stored;
  return out;
}

const q = (s: string) => JSON.stringify(s);

export function describeAction(a: SieveAction): string {
  const flags = (f: string[]) => (f.length > 0 ? ` flags=${q(f.join(' '))}` : '');
  switch (a.type) {
    case 'keep':
      return `keep${flags(a.flags)}`;
    case 'fileinto':
      return `fileinto ${q(a.mailbox)}${flags(a.flags)}${a.copy ? ' copy' : ''}${a.create ? ' create' : ''}`;
    case 'redirect':
      return `redirect ${a.address}${a.copy ? ' copy' : ''}`;
    case 'reject':
    case 'ereject':
      return `${a.type} ${q(a.reason)}`;
    case 'discard':
      return 'discard';
    case 'vacation': {
      const parts = [`vacation seconds=${a.seconds}`];
      if (a.subject !== undefined) parts.push(`subject=${q(a.subject)}`);
      if (a.from !== undefined) parts.push(`from=${q(a.from)}`);
      if (a.handle !== undefined) parts.push(`handle=${q(a.handle)}`);
      if (a.addresses.length > 0) parts.push(`addresses=${q(a.addresses.join(','))}`);
      if (a.mime) parts.push('mime');
      parts.push(`reason=${q(a.reason)}`);
      return parts.join(' ');
    }
  }
}

function cliHost(scriptFile: string): SieveHost {
  const seen = new Set<string>();
  const base = dirname(scriptFile);
  return {
    mailboxExists: (name) => name.toUpperCase() === 'INBOX',
    duplicate: ({ handle, id }) => {
      const key = `${handle}\0${id}`;
      if (seen.has(key)) return true;
      seen.add(key);
      return false;
    },
    include: (name, location) => {
      try {
        return readText(join(base, location === 'global' ? 'global' : '.', `${name}.sieve`));
      } catch {
        return undefined;
      }
    },
  };
}

async function test(argv: string[], io: SieveCommandIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        script: { type: 'string' },
        message: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string' },
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    say(io.stderr, `postern sieve test: ${(e as Error).message}`);
    say(io.stderr, SIEVE_USAGE);
    return EXIT.usage;
  }
  const missing = ['script', 'message', 'from', 'to'].filter((k) => typeof values[k] !== 'string');
  if (missing.length > 0) {
    say(io.stderr, `postern sieve test: missing ${missing.map((m) => `--${m}`).join(', ')}`);
    say(io.stderr, SIEVE_USAGE);
    return EXIT.usage;
  }
  const scriptFile = values.script as string;
  let sieveConfig: SieveConfig;
  let scriptText: string;
  let message: Buffer;
  try {
    sieveConfig = loadSieveConfig(io, values.config as string | undefined);
  } catch (e) {
    if (e instanceof ConfigError) {
      say(io.stderr, `postern sieve test: ${e.message}`);
      return EXIT.failed;
    }
    throw e;
  }
  try {
    scriptText = readText(scriptFile);
    message = readFileSync(values.message as string);
  } catch (e) {
    say(io.stderr, `postern sieve test: cannot read: ${(e as Error).message}`);
    return EXIT.failed;
  }
  const json = values.json === true;
  const c = compile(scriptText, compileOptions(sieveConfig));
  if (!c.ok) {
    if (json) {
      say(io.stdout, JSON.stringify({ status: 'compile-error', errors: c.errors, actions: [], implicitKeep: true, implicitKeepFlags: [] }));
    } else {
      say(io.stdout, 'compile-error');
      for (const e of c.errors) say(io.stderr, `${scriptFile}:${e.line}:${e.column}: ${e.message}`);
    }
    return EXIT.failed;
  }
  const to = (values.to as string).replace(/^<|>$/g, '');
  const r = await run(c.script, message, { from: (values.from as string).replace(/^<|>$/g, ''), to }, cliHost(scriptFile), {
    config: sieveConfig,
    userAddresses: [to],
    environment: { location: 'MDA', phase: 'during' },
  });
  if (json) {
    say(io.stdout, JSON.stringify(resultJson(r)));
    return EXIT.ok;
  }
  if (r.status === 'runtime-error') {
    for (const e of r.errors) say(io.stdout, `runtime-error ${scriptFile}:${e.line}:${e.column}: ${e.message}`);
  }
  for (const a of r.actions) say(io.stdout, describeAction(a));
  if (r.implicitKeep) say(io.stdout, `implicit keep${r.implicitKeepFlags.length > 0 ? ` flags=${q(r.implicitKeepFlags.join(' '))}` : ''}`);
  for (const s of r.stored ?? []) say(io.stdout, `stored ${q(s.mailbox)}: ${s.headers.map(([k, v]) => `${k}: ${v}`).join(' | ')}`);
  return EXIT.ok;
}

/** Entry point for `postern sieve …`; argv is what follows "sieve". */
export async function runSieveCommand(argv: string[], io: SieveCommandIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    say(io.stdout, SIEVE_USAGE);
    return EXIT.ok;
  }
  if (sub === 'check') return check(rest, io);
  if (sub === 'test') return test(rest, io);
  say(io.stderr, sub === undefined ? 'postern sieve: missing subcommand' : `postern sieve: unknown subcommand '${sub}'`);
  say(io.stderr, SIEVE_USAGE);
  return EXIT.usage;
}
