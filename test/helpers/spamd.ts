// Starts a real spamd (Debian spamassassin/spamd) for tests on a free loopback port and a unix
// socket, with the packaged rules (/usr/share/spamassassin) and a private site config in a temp
// dir: no network tests (RBLs, Razor, Pyzor), no Bayes, required_score 5, and one local rule,
// POSTERN_TEST_SPAMMY (6 points for the phrase "postern-spammy-phrase"), for a score between the
// tag and reject thresholds. GTUBE (the spam test string) scores 1000.
import { chmod, copyFile, mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { superviseDaemon, type ScannerDaemon } from './system-service.js';
import { join } from 'node:path';
import { freePort } from './ports.js';

/** SpamAssassin's GTUBE string (a message body with it scores 1000). */
export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
export const SPAMMY_PHRASE = 'postern-spammy-phrase';

const RULES_DIR = '/usr/share/spamassassin';
const PLUGIN_PRE_DIR = '/etc/spamassassin';

export type RunningSpamd = ScannerDaemon;

export async function startSpamd(): Promise<RunningSpamd> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-spamd-'));
  // Run as root, spamd reads its config after dropping to `nobody`.
  await chmod(dir, 0o755);
  const site = join(dir, 'site');
  await mkdir(site, { mode: 0o755 });
  // The .pre files load SpamAssassin's plugins (Check, …); without them spamd cannot scan.
  for (const f of await readdir(PLUGIN_PRE_DIR)) if (f.endsWith('.pre')) await copyFile(join(PLUGIN_PRE_DIR, f), join(site, f));
  await writeFile(
    join(site, 'local.cf'),
    [
      'use_bayes 0',
      'bayes_auto_learn 0',
      'skip_rbl_checks 1',
      'dns_available no',
      'use_razor2 0',
      'use_pyzor 0',
      'required_score 5',
      `body POSTERN_TEST_SPAMMY /${SPAMMY_PHRASE}/`,
      'describe POSTERN_TEST_SPAMMY Test phrase of the Postern test suite',
      'score POSTERN_TEST_SPAMMY 6.0',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const socket = join(dir, 'spamd.sock');
  const args = [
    `--listen=127.0.0.1:${port}`,
    `--listen=${socket}`,
    `--siteconfigpath=${site}`,
    `--configpath=${RULES_DIR}`,
    '--nouser-config',
    // As root spamd must be told whom to scan as; as anyone else it stays that user.
    ...(process.getuid?.() === 0 ? ['--username=nobody'] : []),
    '--min-children=1',
    '--max-children=2',
    `--pidfile=${join(dir, 'spamd.pid')}`,
    '--syslog=stderr',
  ];
  const daemon = await superviseDaemon({ name: 'spamd', command: 'spamd', args, dir, ready: (alive) => waitForPong(port, alive) });
  return { port, socket, dir, ...daemon };
}

/** spamd answers PING with "SPAMD/1.5 0 PONG" once a child is ready to scan. */
async function waitForPong(port: number, alive: { v: boolean }): Promise<void> {
  while (alive.v) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      let got = '';
      s.on('connect', () => s.write('PING SPAMC/1.5\r\n\r\n'));
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('error', () => resolve(false));
      s.on('close', () => resolve(got.includes('PONG')));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
