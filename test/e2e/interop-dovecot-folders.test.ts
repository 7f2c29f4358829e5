// Interop: Sieve `fileinto` folders with non-ASCII names and '&', as Dovecot's IMAP server sees
// them on the same Maildir. Mail goes in over SMTP (nodemailer), the user's script files it, and
// Python's imaplib talks to Debian's Dovecot imap binary run as a pre-authenticated process on
// a copy of the user's Maildir (`IMAP4_stream`, no Dovecot daemon): LIST must show the folders
// under the names the script gave (Dovecot decodes its modified UTF-7 names on disk), and each
// folder must hold its message. Dovecot missing → the test fails and says what to install.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chown, cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';
import { pythonJson } from '../helpers/python.js';
import { requireExecutables, requireRoot } from '../helpers/system-service.js';
import { createEmbeddedStore, type EmbeddedStore } from '../../src/store/embedded.js';

const IMAP = '/usr/lib/dovecot/imap';
const NOBODY = 65534;

// Lists every folder (names decoded from modified UTF-7, RFC 3501 §5.1.3) and the subjects in each.
const LIST_FOLDERS = String.raw`
import imaplib, json, os, re, sys, base64
conf, home = sys.argv[1], sys.argv[2]
os.environ["HOME"] = home
os.environ["USER"] = "alice"
def decode(name):
    def one(m):
        s = m.group(1)
        if s == "":
            return "&"
        b = base64.b64decode(s.replace(",", "/") + "=" * (-len(s) % 4))
        return b.decode("utf-16-be")
    return re.sub(r"&([A-Za-z0-9+,]*)-", one, name)
imap = imaplib.IMAP4_stream(f"{sys.argv[3]} -c {conf}")
typ, lines = imap.list()
assert typ == "OK", typ
out = {}
for line in lines:
    m = re.match(rb'\((.*?)\) "(.)" (.*)$', line)
    flags, raw = m.group(1).decode(), m.group(3).decode("ascii").strip('"')
    if "\\Noselect" in flags or "\\NonExistent" in flags:
        continue  # a parent of the hierarchy, not a mailbox
    typ, _ = imap.select('"' + raw + '"', readonly=True)
    assert typ == "OK", (raw, typ)
    typ, data = imap.search(None, "ALL")
    subjects = []
    for n in data[0].split():
        typ, parts = imap.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(parts[0][1].decode().strip())
    out[decode(raw)] = {"raw": raw, "subjects": subjects}
imap.logout()
print(json.dumps(out))
`;

describe('interop: non-ASCII Sieve folders as Dovecot IMAP lists them', () => {
  let d: RunningDaemon | undefined;
  let store: EmbeddedStore | undefined;
  let dv: string | undefined;

  before(async () => {
    requireRoot('Dovecot imap (it drops privileges to the mail user)');
    await requireExecutables('Dovecot IMAP', [IMAP], ['dovecot-core', 'dovecot-imapd']);
    d = await startDaemon({ plugins: ['relay-acl'] });
    const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw-alice\n');
    assert.equal(r.code, 0, r.stderr);
    store = createEmbeddedStore(d.dataDir);
  });
  after(async () => {
    await store?.close();
    await d?.stop();
    if (d) await removeDir(d.dir);
    if (dv) await rm(dv, { recursive: true, force: true });
  });

  it('fileinto "Entwürfe" and "Projekte/R&D": Dovecot shows both folders by those names, each with its message', async () => {
    await store!.hset('sieve:scripts:alice@example.test', 'main', [
      'require ["fileinto", "mailbox"];',
      'if header :contains "subject" "draft" { fileinto :create "Entwürfe"; }',
      'elsif header :contains "subject" "budget" { fileinto :create "Projekte/R&D"; }',
      '',
    ].join('\n'));
    await store!.set('sieve:active:alice@example.test', 'main');
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: d!.ports.smtp, secure: false, tls: { rejectUnauthorized: false } });
    try {
      for (const subject of ['a draft', 'the budget', 'hello']) {
        await t.sendMail({ envelope: { from: 'bob@remote.example', to: ['alice@example.test'] }, raw: `From: bob@remote.example\r\nTo: alice@example.test\r\nSubject: ${subject}\r\n\r\nHi.\r\n` });
      }
    } finally {
      t.close();
    }
    const maildir = join(d!.dataDir, 'mail', 'example.test', 'alice');
    const count = async () => {
      let n = 0;
      for (const sub of ['', '.Entw&APw-rfe', '.Projekte.R&-D']) n += (await readdir(join(maildir, sub, 'new')).catch(() => [])).length;
      return n;
    };
    assert.equal(await waitFor(count, (n) => n === 3), 3, 'each message is in its folder, under the folder names Dovecot uses on disk');

    // Dovecot reads a copy owned by its mail user, with its indexes in memory and its control files apart.
    dv = await mkdtemp(join(tmpdir(), 'postern-dovecot-folders-'));
    const copy = join(dv, 'Maildir');
    const control = join(dv, 'control');
    await cp(maildir, copy, { recursive: true });
    await mkdir(control);
    for (const p of [dv, copy, control]) await chown(p, NOBODY, NOBODY);
    await chownTree(copy);
    const conf = join(dv, 'dovecot.conf');
    await writeFile(conf, `# Private, no include of /etc/dovecot.\nmail_location = maildir:${copy}:INDEX=MEMORY:CONTROL=${control}\nmail_uid = ${NOBODY}\nmail_gid = ${NOBODY}\n`);

    const seen = await pythonJson<Record<string, { raw: string; subjects: string[] }>>(LIST_FOLDERS, [conf, dv, IMAP]);
    assert.deepEqual(Object.keys(seen).sort(), ['Entwürfe', 'INBOX', 'Projekte.R&D']);
    assert.equal(seen['Entwürfe']!.raw, 'Entw&APw-rfe');
    assert.deepEqual(seen['Entwürfe']!.subjects, ['Subject: a draft']);
    assert.deepEqual(seen['Projekte.R&D']!.subjects, ['Subject: the budget']);
    assert.deepEqual(seen['INBOX']!.subjects, ['Subject: hello']);
  });
});

async function chownTree(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    await chown(p, NOBODY, NOBODY);
    if (e.isDirectory()) await chownTree(p);
  }
}
