// `postern user …` (CONTRACT.md, "Commands"): the user directory from the command line, working
// while the daemon runs. It opens the same store as the daemon (embedded: <data_dir>/state/,
// shared under a file lock), changes it through the Directory, and the directory's change event
// makes a running daemon drop its cache; a user added here can log in and receive mail there at
// once, without a restart.
//
//   user add ADDRESS [--password-stdin | --no-password]   a new user (its domain in domains.local)
//   user passwd ADDRESS [--password-stdin]                 a new password
//   user del ADDRESS                                       removes the user (not its mailbox)
//   user list                                              every user, one address a line
//   user alias ADDRESS TARGET...                           sets an alias (replacing an old one)
//   user unalias ADDRESS                                   removes an alias
//   user aliases                                           every alias: "ADDRESS: T1, T2"
//
// Passwords: with --password-stdin the first line of stdin; otherwise a terminal prompt with
// echo off, asked twice; a non-terminal stdin without the flag is an error, never a silent read.
// Exit codes (src/cli/io.ts): 0 ok, 1 the change was refused or failed (a clear message on
// stderr), 2 usage error.
// Config keys read: `data_dir`, `domains.local`, `store` (from --config FILE, else the lookup of
// load.ts, unless the caller passes a loaded config).
import type { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import { loadConfig, type Config } from '../config/load.js';
import { canonicalAddress, createDirectory, DirectoryError, type StoreDirectory } from '../directory/store-directory.js';
import type { ScryptParams } from '../directory/password.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { LockTimeoutError } from '../store/flock.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { EXIT, say } from './io.js';
import { PasswordInputError, readNewPassword } from './password-input.js';

export const USER_USAGE = `Usage: postern user add ADDRESS [--password-stdin | --no-password] [--config FILE]
       postern user passwd ADDRESS [--password-stdin] [--config FILE]
       postern user del ADDRESS [--config FILE]
       postern user list [--config FILE]
       postern user alias ADDRESS TARGET... [--config FILE]
       postern user unalias ADDRESS [--config FILE]
       postern user aliases [--config FILE]

Changes the user directory; a running daemon sees the change at once.

  --password-stdin    read the password from the first line of stdin (else: prompt on the
                      terminal, with echo off)
  --no-password       add a user that receives mail but cannot log in
  -c, --config FILE   config file (default: $POSTERN_CONFIG, else ./postern.yaml, else defaults)
  -h, --help          this text`;

export interface UserCommandIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env?: NodeJS.ProcessEnv;
  /** A loaded config; without it, --config FILE or the usual lookup decides. */
  config?: Pick<Config, 'data_dir' | 'domains' | 'store'>;
  /** An open store to use (and leave open) instead of opening the configured one. */
  store?: Store;
  /** Cost of new password hashes (tests lower it). */
  scrypt?: ScryptParams;
  log?: Logger;
}

const ARITY: Record<string, [min: number, max: number]> = {
  add: [1, 1],
  passwd: [1, 1],
  del: [1, 1],
  list: [0, 0],
  alias: [2, Infinity],
  unalias: [1, 1],
  aliases: [0, 0],
};

export async function runUserCommand(argv: string[], io: UserCommandIo): Promise<number> {
  // Accept the argv with or without the leading command name.
  const args = argv[0] === 'user' ? argv.slice(1) : argv;
  let values: { 'password-stdin'?: boolean; 'no-password'?: boolean; config?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        'password-stdin': { type: 'boolean' },
        'no-password': { type: 'boolean' },
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (e) {
    return usage(io, (e as Error).message);
  }
  if (values.help) {
    say(io.stdout, USER_USAGE);
    return EXIT.ok;
  }
  const [sub, ...rest] = positionals;
  if (sub === undefined) return usage(io, 'a subcommand is required (add, passwd, del, list, alias, unalias, aliases)');
  const arity = Object.hasOwn(ARITY, sub) ? ARITY[sub] : undefined;
  if (!arity) return usage(io, `unknown subcommand '${sub}'`);
  if (rest.length < arity[0] || rest.length > arity[1]) {
    return usage(io, arity[0] === 0 ? `'${sub}' takes no arguments` : arity[1] === 1 ? `'${sub}' takes one ADDRESS` : `'${sub}' takes an ADDRESS and at least one TARGET`);
  }
  if (values['password-stdin'] && sub !== 'add' && sub !== 'passwd') return usage(io, `--password-stdin goes with add and passwd only`);
  if (values['no-password'] && sub !== 'add') return usage(io, `--no-password goes with add only`);
  if (values['no-password'] && values['password-stdin']) return usage(io, `--no-password and --password-stdin exclude each other`);

  let store: Store | undefined;
  let dir: StoreDirectory | undefined;
  try {
    const config = io.config ?? loadConfig(values.config, io.env ?? process.env);
    const log = io.log ?? silentLogger();
    store = io.store ?? openStore(config, { log });
    dir = createDirectory({ store, localDomains: config.domains.local, log, ...(io.scrypt ? { scrypt: io.scrypt } : {}) });
    const ctx: Ctx = { io, dir, localDomains: config.domains.local, fromStdin: values['password-stdin'] === true, noPassword: values['no-password'] === true };
    return await SUBCOMMANDS[sub]!(ctx, rest);
  } catch (e) {
    if (e instanceof ConfigError) throw e; // the dispatcher prints each problem with its place
    if (e instanceof DirectoryError || e instanceof PasswordInputError || e instanceof LockTimeoutError) return fail(io, e.message);
    return fail(io, (e as Error).message ?? String(e));
  } finally {
    dir?.close();
    if (store && !io.store) await store.close();
  }
}

interface Ctx {
  io: UserCommandIo;
  dir: StoreDirectory;
  localDomains: string[];
  fromStdin: boolean;
  noPassword: boolean;
}

const SUBCOMMANDS: Record<string, (ctx: Ctx, args: string[]) => Promise<number>> = {
  async add(ctx, [address]) {
    // Everything that can be refused is checked before asking for a password.
    const existing = await ctx.dir.getUser(address!);
    const canon = canonicalAddress(address!);
    const domain = canon.slice(canon.lastIndexOf('@') + 1);
    if (!ctx.dir.isLocalDomain(domain)) return fail(ctx.io, notLocal(domain, ctx.localDomains));
    ctx.dir.checkEntryAddress(address!);
    if (existing) return fail(ctx.io, `user ${existing.address} already exists`);
    const password = ctx.noPassword ? undefined : await readNewPassword(ctx.io.stdin, ctx.io.stderr, ctx.fromStdin);
    const user = await ctx.dir.addUser(address!, password);
    say(ctx.io.stdout, `added ${user.address}`);
    return EXIT.ok;
  },

  async passwd(ctx, [address]) {
    const user = await ctx.dir.getUser(address!);
    if (!user) return fail(ctx.io, `no such user: ${canonicalAddress(address!)}`);
    const password = await readNewPassword(ctx.io.stdin, ctx.io.stderr, ctx.fromStdin);
    await ctx.dir.setPassword(user.address, password);
    say(ctx.io.stdout, `password changed for ${user.address}`);
    return EXIT.ok;
  },

  async del(ctx, [address]) {
    const user = await ctx.dir.getUser(address!);
    if (!user || !(await ctx.dir.deleteUser(user.address))) return fail(ctx.io, `no such user: ${canonicalAddress(address!)}`);
    say(ctx.io.stdout, `deleted ${user.address}`);
    return EXIT.ok;
  },

  async list(ctx) {
    for (const u of await ctx.dir.listUsers()) say(ctx.io.stdout, u.address);
    return EXIT.ok;
  },

  async alias(ctx, [address, ...targets]) {
    const canon = canonicalAddress(address!);
    const domain = canon.slice(canon.lastIndexOf('@') + 1);
    if (!ctx.dir.isLocalDomain(domain)) return fail(ctx.io, notLocal(domain, ctx.localDomains));
    await ctx.dir.setAlias(canon, targets);
    say(ctx.io.stdout, `alias ${canon}: ${((await ctx.dir.getAlias(canon)) ?? targets).join(', ')}`);
    return EXIT.ok;
  },

  async unalias(ctx, [address]) {
    const canon = canonicalAddress(address!);
    if (!(await ctx.dir.deleteAlias(canon))) return fail(ctx.io, `no such alias: ${canon}`);
    say(ctx.io.stdout, `removed alias ${canon}`);
    return EXIT.ok;
  },

  async aliases(ctx) {
    for (const [address, targets] of Object.entries(await ctx.dir.listAliases())) say(ctx.io.stdout, `${address}: ${targets.join(', ')}`);
    return EXIT.ok;
  },
};

function notLocal(domain: string, local: string[]): string {
  return local.length === 0
    ? `domain ${domain} is not local: domains.local is empty in the config`
    : `domain ${domain} is not in domains.local (${local.join(', ')})`;
}

function fail(io: UserCommandIo, message: string): number {
  say(io.stderr, `postern user: ${message}`);
  return EXIT.failed;
}

function usage(io: UserCommandIo, message: string): number {
  say(io.stderr, `postern user: ${message}`);
  say(io.stderr, `Run 'postern user --help' for usage.`);
  return EXIT.usage;
}
