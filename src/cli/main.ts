// The `postern` command dispatcher (CONTRACT.md, "Commands"). One table names every command,
// its one-line summary and usage; `main` picks the entry and runs it with a CliIo.
//
// Commands owned elsewhere are loaded on demand from src/cli/<name>.ts, each exporting one
// function `(argv: string[], io: CliIo) => Promise<number | void>` (argv after the command name):
//   user → runUserCommand · sieve → runSieveCommand · sendmail → runSendmail · queue → runQueueCommand
// While such a module does not exist yet the command says so and exits 2.
//
// Exit codes: 0 ok, 1 the command failed (bad config, startup error), 2 usage error.
import { parseArgs } from 'node:util';
import { ConfigError, formatProblem } from '../config/errors.js';
import { displayPath, loadConfig, locateProblems, type Config } from '../config/load.js';
import { CHECK_CONFIG_USAGE, runCheckConfig } from './check-config.js';
import { EXIT, say, usageError, type CliIo } from './io.js';

type Run = (argv: string[], io: CliIo) => Promise<number>;

interface Command {
  summary: string;
  /** `postern COMMAND --help` and `postern help COMMAND`, unless the command's module prints its own. */
  usage: string;
  run: Run;
  /** Loaded on demand from src/cli/<name>.ts, which answers `--help` itself when it exists. */
  delegated?: boolean;
}

const START_USAGE = `Usage: postern start [--config FILE]

Runs every listener the config names, until SIGTERM or SIGINT (then closes listeners, waits
for deliveries in progress, and exits 0). Logs are JSON lines on stdout.

  -c, --config FILE   config file (default: $POSTERN_CONFIG, else ./postern.yaml, else the
                      built-in defaults: unprivileged ports, data under ./data, local domain
                      "localhost", a self-signed certificate)
  -h, --help          this text`;

const COMMANDS: Record<string, Command> = {
  start: { summary: 'run the gateway', usage: START_USAGE, run: (argv, io) => runStart(argv, io) },
  'check-config': { summary: 'validate the config file', usage: CHECK_CONFIG_USAGE, run: runCheckConfig },
  user: {
    summary: 'manage local users',
    usage: `Usage: postern user add ADDRESS [--password-stdin] [--config FILE]
       postern user passwd ADDRESS [--password-stdin] [--config FILE]
       postern user del ADDRESS [--config FILE]
       postern user list [--config FILE]

Changes the user directory; a running daemon sees the change at once.`,
    run: delegate('user', './user.js', 'runUserCommand'),
    delegated: true,
  },
  sieve: {
    summary: 'compile or try Sieve scripts',
    usage: `Usage: postern sieve check [--config FILE] FILE...
       postern sieve test --script FILE --message FILE --from ADDR --to ADDR [--config FILE] [--json]

check prints FILE:LINE:COL: message for each error (exit 1), with the config's sieve.extensions
and limits when --config is given; test prints the actions.`,
    run: delegate('sieve', './sieve.js', 'runSieveCommand'),
    delegated: true,
  },
  sendmail: {
    summary: 'submit a message from stdin, like sendmail(8)',
    usage: `Usage: postern sendmail [-t] [-f ADDR] [-i] [RCPT...] < message`,
    run: delegate('sendmail', './sendmail.js', 'runSendmail'),
    delegated: true,
  },
  queue: {
    summary: 'inspect and steer the outbound queue',
    usage: `Usage: postern queue list
       postern queue show ID
       postern queue retry [ID]
       postern queue delete ID
       postern queue bounce ID`,
    run: delegate('queue', './queue.js', 'runQueueCommand'),
    delegated: true,
  },
};

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `Usage: postern COMMAND [ARGS...]

Postern, a mail policy and filtering gateway.

Commands:
${lines.join('\n')}

Run 'postern COMMAND --help' for a command's options.`;
}

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    if (topic !== undefined) {
      const c = Object.hasOwn(COMMANDS, topic) ? COMMANDS[topic] : undefined;
      if (!c) return unknownCommand(io, topic);
      if (c.delegated) return c.run(['--help'], io);
      say(io.stdout, c.usage);
      return EXIT.ok;
    }
    // Bare `postern` is a usage error; asking for help is not.
    say(name === undefined ? io.stderr : io.stdout, usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) return unknownCommand(io, name);
  // `--help` right after the command: a delegated command's module answers it (its usage is the
  // complete one); the table's usage stands in while the module does not exist.
  if ((rest[0] === '--help' || rest[0] === '-h') && !command.delegated) {
    say(io.stdout, command.usage);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, io);
  } catch (e) {
    if (e instanceof ConfigError) return printConfigError(io, e);
    say(io.stderr, `postern ${name}: ${(e as Error).message}`);
    return EXIT.failed;
  }
}

function unknownCommand(io: CliIo, name: string): number {
  say(io.stderr, `postern: unknown command '${name}'\n`);
  say(io.stderr, usage());
  return EXIT.usage;
}

function printConfigError(io: CliIo, e: ConfigError): number {
  for (const p of e.problems) say(io.stderr, formatProblem(p, e.file));
  return EXIT.failed;
}

/** Loads `module` (relative to this folder) and calls its `exported` function with the arguments. */
function delegate(name: string, module: string, exported: string): Run {
  const asksHelp = (argv: string[]) => argv[0] === '--help' || argv[0] === '-h';
  return async (argv, io) => {
    let mod: Record<string, unknown>;
    try {
      // A variable specifier, so this compiles before the module exists.
      mod = (await import(new URL(module, import.meta.url).href)) as Record<string, unknown>;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const base = module.replace(/^\.\//, '').replace(/\.js$/, '');
      const missing = err.code === 'ERR_MODULE_NOT_FOUND' && new RegExp(`cli[\\\\/]${base}\\.[jt]s'`).test(err.message);
      if (!missing) throw e;
      if (asksHelp(argv)) {
        say(io.stdout, COMMANDS[name]!.usage);
        return EXIT.ok;
      }
      say(io.stderr, `postern ${name}: not available yet in this build`);
      return EXIT.usage;
    }
    const fn = mod[exported];
    if (typeof fn !== 'function') {
      say(io.stderr, `postern ${name}: not available yet in this build (no ${exported})`);
      return EXIT.usage;
    }
    const code = (await (fn as (argv: string[], io: CliIo) => Promise<number | void>)(argv, io)) as number | undefined;
    return code ?? EXIT.ok;
  };
}

/**
 * A problem the daemon found after loading (a plugin's options or the files they name, TLS files)
 * as check-config prints it: FILE:LINE:COL: key.path: message.
 */
function located(e: unknown, config: Config): unknown {
  if (!(e instanceof ConfigError) || e.file !== null || !config.configFile) return e;
  locateProblems(e.problems, config.configFile);
  return new ConfigError(e.problems, displayPath(config.configFile));
}

/**
 * `postern start`: loads the config, starts the daemon, and on the first SIGTERM or SIGINT stops
 * it (listeners first, then in-flight deliveries) and resolves 0. A second signal while stopping
 * resolves 1 at once.
 */
type StartDaemon = (config: Config) => Promise<{ stop(): Promise<void> }>;

export async function runStart(
  argv: string[],
  io: CliIo,
  // Imported on demand: the daemon pulls in every listener, which no other command needs.
  daemon: () => Promise<{ startDaemon: StartDaemon }> = () => import('../daemon.js'),
): Promise<number> {
  let values: { config?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true, allowPositionals: false }));
  } catch (e) {
    return usageError(io, 'start', (e as Error).message);
  }
  const config = loadConfig(values.config, io.env);
  const { startDaemon } = await daemon();
  const gateway = await startDaemon(config).catch((e: unknown) => {
    throw located(e, config);
  });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const finish = (code: number) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(code);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        say(io.stderr, `postern start: ${signal} again while stopping; exiting now`);
        finish(EXIT.failed);
        return;
      }
      stopping = true;
      gateway.stop().then(
        () => finish(EXIT.ok),
        (e: unknown) => {
          say(io.stderr, `postern start: error while stopping: ${(e as Error).message}`);
          finish(EXIT.failed);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
