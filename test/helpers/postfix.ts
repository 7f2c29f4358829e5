// A private Postfix instance for interop tests: its own config directory (`postfix -c DIR`),
// queue, data and mail directories under one temp dir, smtpd on a free loopback port, logging to
// a file through postlogd. It never touches the system instance (/etc/postfix) or port 25.
//
// What it does with mail is the test's choice:
//   - `mailboxes`: domains Postfix stores itself with virtual(8), per user an mbox file or a
//     Maildir under `mail/<domain>/<user>`, owned by `nobody` (virtual_uid_maps);
//   - `relayDomains` + `transport` / `relayhost`: domains it passes on, e.g. to Postern;
//   - `mynetworks`: clients that may relay anywhere; `main`: any other main.cf setting (such
//     as smtpd_authorized_xclient_hosts, or smtpd_tls_* for STARTTLS: tlsmgr runs for it),
//     winning over the helper's.
// Unknown recipients in a mailbox domain are refused at RCPT (550 5.1.1), as Postfix does.
//
// `stop()` runs `postfix -c DIR stop`, waits for the master to exit, and SIGKILLs any process of
// this instance still alive (found by the MAIL_CONFIG=DIR its daemons inherit); call it in an
// `after` hook so that a failing test stops Postfix too. `startPostfix` cleans up after itself
// when the instance does not come up.
import { spawn } from 'node:child_process';
import { chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { python } from './python.js';
import { freeLoopbackPort, isAlive, killLeftovers, makeServiceDir, removeServiceDir, requireExecutables, requireRoot, waitForListener, waitGone } from './system-service.js';

export const POSTFIX_SBIN = '/usr/sbin';
const NOBODY = 65534;

export type MailboxFormat = 'mbox' | 'maildir';

export interface PostfixOptions {
  /** smtpd's port on 127.0.0.1 (default: a free one). */
  port?: number;
  /** myhostname, used in its greeting and Received lines. */
  hostname?: string;
  /** Domains delivered here, each with its users and their mailbox format. */
  mailboxes?: Record<string, Record<string, MailboxFormat>>;
  /** Domains accepted for relaying onward (relay_domains). */
  relayDomains?: string[];
  /** Per-domain next hops (transport_maps), e.g. { 'example.test': 'smtp:[127.0.0.1]:2525' }. */
  transport?: Record<string, string>;
  /** Default next hop for everything else, e.g. '[127.0.0.1]:2525'. */
  relayhost?: string;
  /** Clients that may relay anywhere (default 127.0.0.0/8). */
  mynetworks?: string[];
  /** Further main.cf settings; these win over the helper's. */
  main?: Record<string, string>;
}

export interface PostfixMessage {
  /** The message as stored (mbox: without the From_ line). */
  bytes: string;
  /** mbox only: the From_ line Postfix wrote. */
  from_?: string;
}

export interface RunningPostfix {
  dir: string;
  configDir: string;
  host: string;
  port: number;
  /** The mbox file or Maildir of `user@domain` (from `mailboxes`). */
  mailboxPath(address: string): string;
  /** Reads that mailbox with Python's `mailbox` module; [] while it does not exist yet. */
  readMailbox(address: string): Promise<PostfixMessage[]>;
  /** Messages in Postfix's queue (maildrop, incoming, active, deferred, hold). */
  queueSize(): Promise<number>;
  /** Postfix's log so far (written by postlogd, so it may lag a moment behind). */
  log(): Promise<string>;
  /** SMTP connections smtpd has logged so far ("connect from …" lines). */
  smtpdConnections(): Promise<number>;
  stop(): Promise<void>;
}

const MASTER_CF = (port: number) => `# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:${port} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
`;

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (out += c.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code, out }));
  });
}

const READ_MAILBOX = `
import mailbox, sys, json, os
path, fmt = sys.argv[1], sys.argv[2]
if not os.path.exists(path):
    print("[]"); sys.exit(0)
box = mailbox.mbox(path, create=False) if fmt == "mbox" else mailbox.Maildir(path, factory=None, create=False)
out = []
for key in sorted(box.keys()):
    m = box.get_message(key)
    rec = {"bytes": box.get_bytes(key).decode("latin-1")}
    if fmt == "mbox":
        rec["from_"] = m.get_from()
    out.append(rec)
print(json.dumps(out))
`;

export async function startPostfix(opts: PostfixOptions = {}): Promise<RunningPostfix> {
  requireRoot('Postfix');
  await requireExecutables('Postfix', [join(POSTFIX_SBIN, 'postfix'), join(POSTFIX_SBIN, 'postconf')], ['postfix']);
  const dir = await makeServiceDir('postern-postfix-');
  const configDir = join(dir, 'etc');
  const spool = join(dir, 'spool');
  const mail = join(dir, 'mail');
  const port = opts.port ?? (await freeLoopbackPort());
  const mailboxes = opts.mailboxes ?? {};
  const formatOf = (address: string): { domain: string; user: string; format: MailboxFormat } => {
    const at = address.lastIndexOf('@');
    const user = address.slice(0, at).toLowerCase();
    const domain = address.slice(at + 1).toLowerCase();
    const format = mailboxes[domain]?.[user];
    if (!format) throw new Error(`${address} has no mailbox in this Postfix instance`);
    return { domain, user, format };
  };
  const mailboxPath = (address: string) => {
    const { domain, user } = formatOf(address);
    return join(mail, domain, user);
  };

  await mkdir(configDir, { recursive: true });
  // Postfix insists on a root-owned queue directory, and its data directory belongs to it.
  await mkdir(spool, { recursive: true });
  await mkdir(join(dir, 'data'), { recursive: true });
  await mkdir(mail, { recursive: true });
  const pf = await run('id', ['-u', 'postfix']);
  const pfg = await run('id', ['-g', 'postfix']);
  await chown(join(dir, 'data'), Number(pf.out.trim()), Number(pfg.out.trim()));

  // virtual(8) writes as nobody; it creates Maildirs itself but needs the folder an mbox sits in.
  const vmailbox: string[] = [];
  for (const [domain, users] of Object.entries(mailboxes)) {
    await mkdir(join(mail, domain), { recursive: true });
    await chown(join(mail, domain), NOBODY, NOBODY);
    for (const [user, format] of Object.entries(users)) vmailbox.push(`${user}@${domain} ${domain}/${user}${format === 'maildir' ? '/' : ''}`);
  }
  await chown(mail, NOBODY, NOBODY);
  await writeFile(join(configDir, 'vmailbox'), vmailbox.join('\n') + '\n');
  await writeFile(join(configDir, 'transport'), Object.entries(opts.transport ?? {}).map(([d, t]) => `${d} ${t}`).join('\n') + '\n');

  const main: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: spool,
    data_directory: join(dir, 'data'),
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    syslog_name: 'postfix-postern-test',
    maillog_file: join(dir, 'maillog'),
    maillog_file_prefixes: dir,
    myhostname: opts.hostname ?? 'postfix.interop.test',
    mydomain: 'interop.test',
    myorigin: '$myhostname',
    mydestination: '',
    local_recipient_maps: '',
    alias_maps: '',
    alias_database: '',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: (opts.mynetworks ?? ['127.0.0.0/8']).join(' '),
    smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
    smtpd_tls_security_level: 'none',
    smtp_tls_security_level: 'none',
    smtp_host_lookup: 'native',
    biff: 'no',
    append_dot_mydomain: 'no',
    virtual_mailbox_domains: Object.keys(mailboxes).join(' '),
    virtual_mailbox_base: mail,
    virtual_mailbox_maps: `texthash:${join(configDir, 'vmailbox')}`,
    virtual_uid_maps: `static:${NOBODY}`,
    virtual_gid_maps: `static:${NOBODY}`,
    relay_domains: (opts.relayDomains ?? []).join(' '),
    transport_maps: `texthash:${join(configDir, 'transport')}`,
    relayhost: opts.relayhost ?? '',
    ...opts.main,
  };
  await writeFile(join(configDir, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  await writeFile(join(configDir, 'master.cf'), MASTER_CF(port));

  const masterPid = async (): Promise<number | null> => {
    const t = await readFile(join(spool, 'pid', 'master.pid'), 'utf8').catch(() => '');
    const n = parseInt(t.trim(), 10);
    return Number.isFinite(n) && n > 0 ? n : null;
  };
  const log = () => readFile(join(dir, 'maillog'), 'utf8').catch(() => '');

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const pid = await masterPid();
    if (pid && isAlive(pid)) {
      await run(join(POSTFIX_SBIN, 'postfix'), ['-c', configDir, 'stop']);
      const left = await waitGone([pid], 10_000);
      for (const p of left) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* exited meanwhile */
        }
      }
      await waitGone(left, 5_000);
    }
    // Its daemons carry MAIL_CONFIG=<configDir>: none may outlive the test.
    await killLeftovers(configDir);
    await removeServiceDir(dir);
  };

  try {
    const started = await run(join(POSTFIX_SBIN, 'postfix'), ['-c', configDir, 'start']);
    if (started.code !== 0) throw new Error(`postfix -c ${configDir} start exited with ${started.code}: ${started.out}\n${await log()}`);
    await waitForListener(port, '127.0.0.1', 15_000, `Postfix smtpd (127.0.0.1:${port})`);
  } catch (e) {
    const logText = await log();
    await stop();
    throw new Error(`${(e as Error).message}\nPostfix log:\n${logText}`);
  }

  return {
    dir,
    configDir,
    host: '127.0.0.1',
    port,
    mailboxPath,
    async readMailbox(address) {
      const { format } = formatOf(address);
      return JSON.parse(await python(READ_MAILBOX, [mailboxPath(address), format])) as PostfixMessage[];
    },
    async queueSize() {
      let n = 0;
      const walk = async (p: string): Promise<void> => {
        for (const e of await readdir(p, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(join(p, e.name));
          else n++;
        }
      };
      for (const q of ['maildrop', 'incoming', 'active', 'deferred', 'hold']) await walk(join(spool, q));
      return n;
    },
    log,
    async smtpdConnections() {
      return ((await log()).match(/ postfix-postern-test\/smtpd\[\d+\]: connect from /g) ?? []).length;
    },
    stop,
  };
}
