// Interop: mbox locking against a real Dovecot. Dovecot reads an mbox under an fcntl(2) read lock
// (its default `mbox_read_locks = fcntl`), and Postern appends under a dotlock, flock(2) and an
// fcntl(2) write lock (src/delivery/mbox.ts). While an append of Postern's is under way, Dovecot's
// IMAP server (Debian's imap binary, pre-authenticated, driven by Python's imaplib through
// `IMAP4_stream`) must not get at the mailbox; once the append is done, it reads both messages.
// The append is held with every lock taken at the moment its intent record is written, which the
// writer does just before the entry's bytes. Dovecot missing → the test fails and says what to install.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chown, chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MboxWriter, mboxEntry } from '../../src/delivery/mbox.js';
import { DirSyncer } from '../../src/queue/dir-sync.js';
import { pythonJson } from '../helpers/python.js';
import { requireExecutables, requireRoot } from '../helpers/system-service.js';

const IMAP = '/usr/lib/dovecot/imap';
const NOBODY = 65534;
const OLD = 'From old@example.net Thu Jan  4 05:06:07 2024\nSubject: old\n\nold\n\n';

// SELECT INBOX read-only and list the subjects, or the server's refusal.
const READ_INBOX = String.raw`
import imaplib, json, os, sys
conf, home, imap_bin = sys.argv[1:4]
os.environ["HOME"] = home
os.environ["USER"] = "alice"
imap = imaplib.IMAP4_stream(f"{imap_bin} -c {conf}")
typ, data = imap.select("INBOX", readonly=True)
out = {"select": typ, "text": data[0].decode(errors="replace") if data and data[0] else ""}
if typ == "OK":
    typ, data = imap.search(None, "ALL")
    subjects = []
    for n in data[0].split():
        typ, parts = imap.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(parts[0][1].decode().strip())
    out["subjects"] = subjects
imap.logout()
print(json.dumps(out))
`;

describe('interop: an mbox append of Postern keeps Dovecot out until it is done', () => {
  let dir: string | undefined;

  before(async () => {
    requireRoot('Dovecot imap (it drops privileges to the mail user)');
    await requireExecutables('Dovecot IMAP', [IMAP], ['dovecot-core', 'dovecot-imapd']);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('Dovecot times out on the lock during the append, then reads both messages', { timeout: 60_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-dovecot-mbox-'));
    const mail = join(dir, 'mail');
    const control = join(dir, 'control');
    const inbox = join(mail, 'inbox');
    await mkdir(mail);
    await mkdir(control);
    await writeFile(inbox, OLD);
    // Dovecot runs as its mail user; Postern (root here) appends to the same file.
    for (const p of [dir, mail, control, inbox]) await chown(p, NOBODY, NOBODY);
    await chmod(inbox, 0o666);
    const conf = join(dir, 'dovecot.conf');
    await writeFile(
      conf,
      [
        '# Private, no include of /etc/dovecot.',
        `mail_location = mbox:${mail}:INBOX=${inbox}:INDEX=MEMORY:CONTROL=${control}`,
        `mail_uid = ${NOBODY}`,
        `mail_gid = ${NOBODY}`,
        'mbox_lock_timeout = 2 secs',
        // fcntl alone (Dovecot's default adds a dotlock for writes, which Postern's dotlock would
        // stop on its own): the test is about the fcntl lock.
        'mbox_read_locks = fcntl',
        'mbox_write_locks = fcntl',
        '',
      ].join('\n'),
    );
    const dovecotReads = () => pythonJson<{ select: string; text: string; subjects?: string[] }>(READ_INBOX, [conf, dir!, IMAP]);
    assert.deepEqual((await dovecotReads()).subjects, ['Subject: old'], 'Dovecot reads the mailbox when nobody holds it');

    let held!: () => void;
    let release!: () => void;
    const locked = new Promise<void>((r) => (held = r));
    const go = new Promise<void>((r) => (release = r));
    const intent = {
      get: async () => null,
      put: async () => {
        held();
        await go;
      },
    };
    const writer = new MboxWriter(new DirSyncer());
    const entry = mboxEntry('bob@example.net', Date.UTC(2024, 0, 5), Buffer.from('Subject: new\n\nnew\n'));
    const append = writer.deliver(inbox, undefined, entry, { intent });
    try {
      // An append that fails before it holds the locks ends the wait too (and the test).
      await Promise.race([locked, append.then(() => Promise.reject(new Error('the append ended without reaching its intent record')))]);
      const during = await dovecotReads();
      assert.equal(during.select, 'NO', `Dovecot got at the mailbox during the append: ${JSON.stringify(during)}`);
      assert.match(during.text, /lock/i);
    } finally {
      release();
    }
    await append;
    assert.deepEqual((await dovecotReads()).subjects, ['Subject: old', 'Subject: new']);
  });
});
