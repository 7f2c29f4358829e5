// A private Dovecot instance for interop tests: `dovecot -F -c <temp>/dovecot.conf`, a child of
// the test, with LMTP and IMAP listeners on free loopback ports (plus LMTP's unix socket),
// users from a passwd-file, and Maildirs under the temp dir. It runs as root, as Dovecot's
// master does, with its own internal/login users and mail stored as `nobody`; `instance_name`
// and `base_dir` keep it apart from any system Dovecot.
//
// Mail is read back with Python's imaplib from this same Dovecot (`readInbox`). `stop()` sends
// SIGTERM, waits for the master to exit (SIGKILL after 10 s), then kills any process of this
// instance still alive; call it in an `after` hook so that a failing test stops Dovecot too.
import { spawn, type ChildProcess } from 'node:child_process';
import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { python } from './python.js';
import { freeLoopbackPort, killLeftovers, makeServiceDir, removeServiceDir, requireExecutables, requireRoot, waitForListener } from './system-service.js';

const NOBODY = 65534;

export interface DovecotOptions {
  /** Users and their passwords, by full address (the login name and the LMTP recipient). */
  users: Record<string, string>;
  lmtpPort?: number;
  imapPort?: number;
  hostname?: string;
}

export interface ImapMessage {
  uid: number;
  bytes: string;
}

export interface RunningDovecot {
  dir: string;
  host: string;
  lmtpPort: number;
  imapPort: number;
  /** LMTP's unix socket (for `lmtp+unix:` routes). */
  lmtpSocket: string;
  /** Logs in over IMAP as `address` and fetches every message of INBOX, without setting \Seen. */
  readInbox(address: string): Promise<ImapMessage[]>;
  log(): Promise<string>;
  stop(): Promise<void>;
}

const READ_INBOX = `
import imaplib, sys, json
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
imap = imaplib.IMAP4(host, port)
imap.login(user, password)
typ, _ = imap.select("INBOX", readonly=True)
assert typ == "OK", typ
typ, data = imap.uid("SEARCH", None, "ALL")
out = []
for uid in data[0].split():
    typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK", typ
    out.append({"uid": int(uid), "bytes": parts[0][1].decode("latin-1")})
imap.logout()
print(json.dumps(out))
`;

export async function startDovecot(opts: DovecotOptions): Promise<RunningDovecot> {
  requireRoot('Dovecot');
  await requireExecutables('Dovecot with IMAP and LMTP', ['/usr/sbin/dovecot', '/usr/lib/dovecot/imap', '/usr/lib/dovecot/lmtp'], ['dovecot-core', 'dovecot-imapd', 'dovecot-lmtpd']);
  const dir = await makeServiceDir('postern-dovecot-');
  const instance = `postern-test-${randomBytes(4).toString('hex')}`;
  const lmtpPort = opts.lmtpPort ?? (await freeLoopbackPort());
  const imapPort = opts.imapPort ?? (await freeLoopbackPort());
  const hostname = opts.hostname ?? 'dovecot.interop.test';
  const mail = join(dir, 'mail');
  await mkdir(join(dir, 'run'), { recursive: true });
  await mkdir(join(dir, 'state'), { recursive: true });
  await mkdir(mail, { recursive: true });
  await chown(mail, NOBODY, NOBODY);
  for (const [user, pass] of Object.entries(opts.users)) {
    if (/[:\n]/.test(user + pass)) throw new Error(`user ${user}: ':' and newlines cannot appear in a passwd-file entry`);
  }
  await writeFile(join(dir, 'users'), Object.entries(opts.users).map(([u, p]) => `${u}:{PLAIN}${p}::::::\n`).join(''));
  const conf = `# Private test instance; no include of /etc/dovecot.
instance_name = ${instance}
base_dir = ${join(dir, 'run')}
state_dir = ${join(dir, 'state')}
log_path = ${join(dir, 'dovecot.log')}
hostname = ${hostname}
postmaster_address = postmaster@${hostname}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:${mail}/%d/%n
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${join(dir, 'users')}
}
userdb {
  driver = passwd-file
  args = username_format=%u ${join(dir, 'users')}
  default_fields = uid=${NOBODY} gid=${NOBODY} home=${mail}/%d/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${lmtpPort}
  }
  unix_listener lmtp {
    mode = 0666
  }
}
`;
  const confFile = join(dir, 'dovecot.conf');
  await writeFile(confFile, conf);
  const log = () => readFile(join(dir, 'dovecot.log'), 'utf8').catch(() => '');

  let stderr = '';
  const proc: ChildProcess = spawn('/usr/sbin/dovecot', ['-F', '-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    // Its children are titled "dovecot-<instance>/…"; none may outlive the test.
    await killLeftovers(`dovecot-${instance}/`);
    await killLeftovers(confFile);
    await removeServiceDir(dir);
  };

  try {
    const early = exited.then(() => {
      throw new Error(`dovecot exited at start: ${stderr}`);
    });
    await Promise.race([
      (async () => {
        await waitForListener(lmtpPort, '127.0.0.1', 15_000, `Dovecot LMTP (127.0.0.1:${lmtpPort})`);
        await waitForListener(imapPort, '127.0.0.1', 15_000, `Dovecot IMAP (127.0.0.1:${imapPort})`);
      })(),
      early,
    ]);
    early.catch(() => undefined);
  } catch (e) {
    const logText = await log();
    await stop();
    throw new Error(`${(e as Error).message}\nDovecot log:\n${logText}`);
  }

  return {
    dir,
    host: '127.0.0.1',
    lmtpPort,
    imapPort,
    lmtpSocket: join(dir, 'run', 'lmtp'),
    async readInbox(address) {
      const pass = opts.users[address];
      if (pass === undefined) throw new Error(`${address} is not a user of this Dovecot instance`);
      return JSON.parse(await python(READ_INBOX, ['127.0.0.1', String(imapPort), address, pass])) as ImapMessage[];
    },
    log,
    stop,
  };
}
