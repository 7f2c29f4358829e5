// Starts a real rspamd (Debian rspamd) for tests: Debian's own rules and module settings
// ($CONFDIR/common.conf), but a private top-level config in a temp dir that keeps it on the
// machine and quick to start:
// - one worker, "normal" (the /checkv2 protocol), on 127.0.0.1 and a free port; no controller,
//   proxy or fuzzy storage worker, so none of rspamd's well-known ports are taken;
// - DBDIR, RUNDIR and LOCAL_CONFDIR in the temp dir (nothing read from /etc/rspamd/local.d,
//   nothing written to /var/lib/rspamd), logs on the console (kept for start failures);
// - its DNS resolver pointed at a test DNS server that answers NXDOMAIN at once, so RBL, SURBL
//   and rDNS lookups end quickly and nothing is asked outside;
// - no fuzzy_check (its servers are on the Internet and resolved at start by the system
//   resolver); no Redis (none is configured, so Bayes, greylisting and history stay off);
// - a TLD list of a few entries instead of the public suffix list: compiling those ~9600
//   suffixes with hyperscan is what makes a stock rspamd take seconds (tens of seconds on a slow
//   machine) to start; with the short list it is ready in well under a second. URLs under
//   other TLDs are not recognised as URLs, which no test here relies on;
// - milter_headers adds X-Spamd-Result, X-Rspamd-Queue-Id and X-Rspamd-Server also for
//   loopback clients (Debian adds none; by default rspamd skips them for local senders).
// rspamd's GTUBE rule is SpamAssassin's test string: it answers "reject" with "Gtube pattern".
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freeLoopbackPort, makeServiceDir, removeServiceDir, requireExecutables, superviseDaemon, type SupervisedDaemon } from './system-service.js';
import { startDnsServer, type RunningDnsServer } from './dns-server.js';

export const RSPAMD_BINARY = '/usr/bin/rspamd';

/** The suffixes rspamd's URL detector knows here (the public suffix list format, one a line). */
const TLDS = ['com', 'net', 'org', 'test', 'example', 'invalid'];

export interface RunningRspamd extends SupervisedDaemon {
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  dir: string;
  /** The DNS server rspamd asks (its `queries` show what rspamd looked up). */
  dns: RunningDnsServer;
}

export async function startRspamd(opts: { binary?: string } = {}): Promise<RunningRspamd> {
  const binary = opts.binary ?? RSPAMD_BINARY;
  await requireExecutables('rspamd', [binary], ['rspamd']);
  const dir = await makeServiceDir('postern-rspamd-');
  const dns = await startDnsServer();
  try {
    const port = await freeLoopbackPort();
    const local = join(dir, 'local');
    await mkdir(join(local, 'local.d'), { recursive: true });
    await mkdir(join(dir, 'db'));
    await mkdir(join(dir, 'run'));
    await writeFile(join(dir, 'tld.dat'), TLDS.join('\n') + '\n');
    await writeFile(
      join(local, 'local.d', 'milter_headers.conf'),
      ['use = ["x-spamd-result", "x-rspamd-queue-id", "x-rspamd-server"];', 'skip_local = false;', 'skip_authenticated = false;', ''].join('\n'),
    );
    const conf = join(dir, 'rspamd.conf');
    await writeFile(conf, rspamdConf({ port, dnsServer: dns.server, tldFile: join(dir, 'tld.dat') }));
    const args = [
      '-f',
      '-c',
      conf,
      `--var=DBDIR=${join(dir, 'db')}`,
      `--var=RUNDIR=${join(dir, 'run')}`,
      `--var=LOCAL_CONFDIR=${local}`,
      `--var=LOGDIR=${dir}`,
      // As root rspamd wants to drop to its own user, which could not enter the temp dir's
      // files; -i lets it stay root. As anyone else it runs as that user.
      ...(process.getuid?.() === 0 ? ['-i', '-u', 'root', '-g', 'root'] : []),
    ];
    const url = `http://127.0.0.1:${port}`;
    const daemon = await superviseDaemon({ name: 'rspamd', command: binary, args, dir, group: true, ready: (alive) => waitForPong(url, alive) });
    return {
      port,
      url,
      dir,
      dns,
      start: daemon.start,
      stop: daemon.stop,
      close: async () => {
        await daemon.close();
        await dns.stop();
      },
    };
  } catch (e) {
    await dns.stop();
    await removeServiceDir(dir);
    throw e;
  }
}

/** The top-level config: Debian's rules and modules, our options, logging and one worker. */
function rspamdConf(o: { port: number; dnsServer: string; tldFile: string }): string {
  return `# rspamd for Postern's tests: Debian's rules, private options, one normal worker.
.include "$CONFDIR/common.conf"

options {
    pidfile = "$RUNDIR/rspamd.pid";
    # Debian's list without fuzzy_check, whose servers are on the Internet.
    filters = "chartable,dkim,regexp";
    cache_file = "$DBDIR/symbols.cache";
    dynamic_conf = "$DBDIR/rspamd_dynamic";
    history_file = "$DBDIR/rspamd.history";
    stats_file = "$DBDIR/stats.ucl";
    control_socket = "$DBDIR/rspamd.sock mode=0600";
    hs_cache_dir = "$DBDIR/";
    tempdir = "$DBDIR";
    url_tld = "${o.tldFile}";
    dns {
        nameserver = ["${o.dnsServer}"];
        timeout = 1s;
        retransmits = 1;
    }
    task_timeout = 8s;
    allow_raw_input = true;
}

logging {
    type = "console";
    level = "warning";
}

worker "normal" {
    bind_socket = "127.0.0.1:${o.port}";
    .include "$CONFDIR/worker-normal.inc"
}
`;
}

/** Resolves once GET /ping answers "pong" (the normal worker is up and accepts requests). */
async function waitForPong(url: string, alive: { v: boolean }): Promise<void> {
  while (alive.v) {
    const ok = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1_000) })
      .then(async (r) => r.ok && (await r.text()).trim() === 'pong')
      .catch(() => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
