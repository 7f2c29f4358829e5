// Starts a real clamd (Debian clamav-daemon) for tests: a private config in a temp dir, a loopback
// TCP port (picked free) and a unix socket, and a signature database the test writes itself, so
// nothing is downloaded (no freshclam). The default database holds one MD5 hash signature
// (ClamAV .hdb: "md5:size:name") of the EICAR test string, which clamd reports as
// "<name>.UNOFFICIAL". clamd decodes MIME, so EICAR inside a base64 attachment is found.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { superviseDaemon, type ScannerDaemon } from './system-service.js';
import { freePort } from './ports.js';
import { join } from 'node:path';

/** The EICAR anti-virus test string (68 octets), the same one every scanner knows. */
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
export const EICAR_SIGNATURE = 'Postern.Test.EICAR';
/** As clamd names a signature from a database that is not ClamAV's own. */
export const EICAR_FOUND = `${EICAR_SIGNATURE}.UNOFFICIAL`;

/** clamd on a loopback TCP port and a unix socket; start/stop/close as SupervisedDaemon. */
export type RunningClamd = ScannerDaemon;


export async function startClamd(opts: { streamMaxLength?: string } = {}): Promise<RunningClamd> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-clamd-'));
  const db = join(dir, 'db');
  await mkdir(db);
  const md5 = createHash('md5').update(EICAR).digest('hex');
  await writeFile(join(db, 'postern-test.hdb'), `${md5}:${EICAR.length}:${EICAR_SIGNATURE}\n`);
  const port = await freePort();
  const socket = join(dir, 'clamd.sock');
  const conf = join(dir, 'clamd.conf');
  await writeFile(
    conf,
    [
      'Foreground yes',
      `DatabaseDirectory ${db}`,
      'TCPAddr 127.0.0.1',
      `TCPSocket ${port}`,
      `LocalSocket ${socket}`,
      `LogFile ${join(dir, 'clamd.log')}`,
      `TemporaryDirectory ${dir}`,
      `StreamMaxLength ${opts.streamMaxLength ?? '25M'}`,
      'SelfCheck 0',
      '',
    ].join('\n'),
  );
  const daemon = await superviseDaemon({ name: 'clamd', command: 'clamd', args: ['-c', conf], dir, ready: (alive) => waitForPong(port, alive) });
  return { port, socket, dir, ...daemon };
}

/** Resolves once clamd answers "PONG" on the port (it only listens after loading the database). */
async function waitForPong(port: number, alive: { v: boolean }): Promise<void> {
  while (alive.v) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      let got = '';
      s.on('connect', () => s.write('zPING\0'));
      s.on('data', (c: Buffer) => {
        got += c.toString();
        if (got.includes('PONG')) {
          s.destroy();
          resolve(true);
        }
      });
      s.on('error', () => resolve(false));
      s.on('close', () => resolve(got.includes('PONG')));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
