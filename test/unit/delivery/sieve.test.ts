// Per-user Sieve at local delivery (src/delivery/sieve.ts through LocalDelivery): folders and flag
// letters, :create, discard, reject, redirect (with loop protection and no resend on retry),
// vacation (RFC 3834 suppression and once per period), keywords in dovecot-keywords.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { LocalDelivery } from '../../../src/delivery/local.js';
import { MemoryStore } from '../../../src/store/memory.js';
import { DeliveryError } from '../../../src/delivery/errors.js';
import { VACATION_PENDING_TTL_MS } from '../../../src/delivery/sieve.js';
import { splitFlags, infoLetters } from '../../../src/delivery/maildir.js';
import type { Envelope } from '../../../src/queue/envelope.js';
import { tempDir, testConfig } from '../queue/helpers.js';

const USER = 'alice@example.test';
const MSG = 'From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: plans\r\nMessage-ID: <m1@remote.test>\r\n\r\nhello\r\n';

let t: { dir: string; cleanup: () => Promise<void> };
let store: MemoryStore;
let sent: { env: Envelope; msg: string }[];
let local: LocalDelivery;
let n = 0;

beforeEach(async () => {
  t = await tempDir('postern-usieve-');
  store = new MemoryStore();
  sent = [];
  local = new LocalDelivery(testConfig(t.dir), new DirSyncer(), {}, {
    store,
    submit: async (env, msg) => {
      sent.push({ env, msg: msg.toString() });
      return `Q${sent.length}`;
    },
  });
});
afterEach(async () => {
  await store.close();
  await t.cleanup();
});

async function activate(script: string, user = USER): Promise<void> {
  await store.hset(`sieve:scripts:${user}`, 'main', script);
  await store.set(`sieve:active:${user}`, 'main');
}

function deliver(opts: { message?: string; sender?: string; qid?: string; checkExisting?: boolean; receivedAt?: number } = {}) {
  return local.deliver({
    qid: opts.qid ?? `QID${++n}`,
    sender: opts.sender ?? 'bob@remote.test',
    receivedAt: opts.receivedAt ?? Date.now(),
    user: USER,
    message: Buffer.from(opts.message ?? MSG),
    checkExisting: opts.checkExisting ?? false,
  });
}

const box = (folder = '') => join(t.dir, 'mail', 'example.test', 'alice', folder ? `.${folder}` : '');
const files = async (folder: string, sub: 'new' | 'cur') => readdir(join(box(folder), sub)).catch(() => [] as string[]);

describe('user sieve at delivery', () => {
  it('without an active script the message goes to INBOX/new', async () => {
    await deliver();
    assert.equal((await files('', 'new')).length, 1);
  });

  it('fileinto :create with flags → Maildir++ folder, cur/ with info letters', async () => {
    await activate('require ["fileinto", "mailbox", "imap4flags"];\nfileinto :create :flags ["\\\\Seen", "\\\\Flagged"] "Work";\n');
    await deliver();
    assert.deepEqual(await files('', 'new'), []);
    const cur = await files('Work', 'cur');
    assert.equal(cur.length, 1);
    assert.match(cur[0]!, /:2,FS$/);
  });

  it('fileinto a missing folder without :create stores into INBOX (RFC 5228 §4.1)', async () => {
    await activate('require "fileinto";\nfileinto "Nowhere";\n');
    await deliver();
    assert.equal((await files('', 'new')).length, 1);
    assert.equal((await files('Nowhere', 'new')).length, 0);
    await mkdir(join(box('Nowhere'), 'new'), { recursive: true });
    await deliver();
    assert.equal((await files('Nowhere', 'new')).length, 1, 'an existing folder is used');
  });

  it('keywords get letters from dovecot-keywords', async () => {
    await activate('require "imap4flags";\naddflag ["$Important", "\\\\Answered"];\n');
    await deliver();
    const cur = await files('', 'cur');
    assert.match(cur[0]!, /:2,Ra$/);
    assert.equal(await readFile(join(box(), 'dovecot-keywords'), 'utf8'), '0 $Important\n');
    assert.deepEqual(splitFlags(['\\Seen', '\\Recent', 'foo', 'FOO', 'bad(']), { letters: 'S', keywords: ['foo'] });
    assert.equal(infoLetters('SF', 'b'), 'FSb');
  });

  it('discard stores nothing; reject is a permanent 550 5.7.1 with the reason', async () => {
    await activate('discard;');
    const r = await deliver();
    assert.match(r.destination, /^sieve:discard/);
    assert.deepEqual(await files('', 'new'), []);
    await activate('require "reject";\nreject "I do not want\nthis";');
    await assert.rejects(deliver(), (e: unknown) => e instanceof DeliveryError && !e.temporary && e.code === 550 && e.enhanced === '5.7.1' && e.text === 'I do not want this');
  });

  it('redirect goes through submit once per (queue id, user), sender kept, Delivered-To added', async () => {
    await activate('redirect "carol@example.test";');
    await deliver({ qid: 'SAMEQID' });
    await deliver({ qid: 'SAMEQID', checkExisting: true }); // a retry of the same delivery
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.env.mailFrom, 'bob@remote.test');
    assert.deepEqual(sent[0]!.env.recipients, [{ address: 'carol@example.test' }]);
    assert.match(sent[0]!.msg, /^Delivered-To: alice@example.test\r\nFrom: Bob/);
    assert.deepEqual(await files('', 'new'), []);
  });

  it('redirect: the same Message-ID sent again under a new queue id (a client retrying after 4xx) is kept, not redirected twice; another address or Message-ID is redirected', async () => {
    await activate('redirect "carol@example.test";');
    await deliver({ qid: 'FIRSTQID' });
    assert.deepEqual(await files('', 'new'), []);
    const receivedAt = Date.now();
    await deliver({ qid: 'RESENTQID', receivedAt });
    assert.equal(sent.length, 1, 'one redirect for one message');
    assert.equal((await files('', 'new')).length, 1, 'not redirected, so kept: nothing lost if the record outlived its redirect');
    // A retry of that delivery does the same: one copy, still no second redirect.
    await deliver({ qid: 'RESENTQID', receivedAt, checkExisting: true });
    assert.equal(sent.length, 1);
    assert.equal((await files('', 'new')).length, 1);
    // The address is compared without case.
    await activate('redirect "Carol@Example.TEST";');
    await deliver({ qid: 'THIRDQID' });
    assert.equal(sent.length, 1);
    await activate('redirect "dave@example.test";');
    await deliver({ qid: 'FOURTHQID' });
    await deliver({ qid: 'FIFTHQID', message: MSG.replace('<m1@remote.test>', '<m2@remote.test>') });
    // A resend (RFC 5322 resent fields) and a list's copy are other messages.
    await deliver({ qid: 'SIXTHQID', message: `Resent-Message-ID: <r1@remote.test>\r\n${MSG}` });
    await deliver({ qid: 'SEVENTHQID', message: `List-Id: <l.remote.test>\r\n${MSG}` });
    assert.deepEqual(sent.map((m) => m.env.recipients[0]!.address), ['carol@example.test', 'dave@example.test', 'dave@example.test', 'dave@example.test', 'dave@example.test']);
  });

  it('redirect: without a usable Message-ID each delivery under its own queue id is redirected', async () => {
    await activate('redirect "carol@example.test";');
    const bare = MSG.replace('Message-ID: <m1@remote.test>\r\n', '');
    await deliver({ qid: 'FIRSTQID', message: bare });
    await deliver({ qid: 'SECONDQID', message: bare });
    for (const id of ['<>', 'none', '<no-at-sign>']) {
      await deliver({ qid: `A${id}`, message: MSG.replace('<m1@remote.test>', id) });
      await deliver({ qid: `B${id}`, message: MSG.replace('<m1@remote.test>', id) });
    }
    assert.equal(sent.length, 8);
    assert.deepEqual(await files('', 'new'), []);
  });

  it('redirect: one that could not be queued leaves no record, so the next attempt redirects', async () => {
    await activate('redirect "carol@example.test";');
    let fail = true;
    const failing = new LocalDelivery(testConfig(t.dir), new DirSyncer(), {}, {
      store,
      submit: async (env, msg) => {
        if (fail) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        sent.push({ env, msg: msg.toString() });
        return 'Q1';
      },
    });
    const attempt = (qid: string) => failing.deliver({ qid, sender: 'bob@remote.test', receivedAt: Date.now(), user: USER, message: Buffer.from(MSG), checkExisting: false });
    // Nothing to clean up either: a store that cannot remove keys changes nothing.
    store.del = () => Promise.reject(new Error('store unavailable'));
    await assert.rejects(attempt('FIRSTQID'), /ENOSPC/);
    fail = false;
    await attempt('RESENTQID');
    assert.equal(sent.length, 1);
  });

  it('redirect: a retry of a delivery that skipped a duplicate keeps the message, though its first store failed', async () => {
    await activate('redirect "carol@example.test";');
    await deliver({ qid: 'FIRSTQID' });
    // The resend finds the duplicate, and its INBOX copy cannot be stored for now.
    await mkdir(box(), { recursive: true });
    await writeFile(join(box(), 'tmp'), 'not a folder');
    const receivedAt = Date.now();
    await assert.rejects(deliver({ qid: 'RESENTQID', receivedAt }), (e: unknown) => e instanceof DeliveryError && e.temporary);
    await rm(join(box(), 'tmp'));
    await deliver({ qid: 'RESENTQID', receivedAt, checkExisting: true });
    assert.equal(sent.length, 1);
    assert.equal((await files('', 'new')).length, 1);
  });

  it('redirect: a skipped duplicate goes to INBOX only when the plan stores nothing else', async () => {
    await activate('require "fileinto";\nfileinto "Lists";\nredirect "carol@example.test";\n');
    await mkdir(join(box('Lists'), 'new'), { recursive: true });
    await deliver({ qid: 'FIRSTQID' });
    await deliver({ qid: 'RESENTQID' });
    assert.equal(sent.length, 1);
    assert.equal((await files('Lists', 'new')).length, 2, 'each delivery filed as the script says');
    assert.deepEqual(await files('', 'new'), [], 'no INBOX copy besides');
  });

  it('redirect: a record of an older build (written before queueing) is kept, not redirected', async () => {
    await activate('redirect "carol@example.test";');
    const hash = (...p: string[]) => createHash('sha256').update(p.join('\0')).digest('hex').slice(0, 32);
    await store.set(`sieve:sent:OLDQID:${hash(USER, 'redirect', 'carol@example.test')}`, '1');
    await deliver({ qid: 'OLDQID' });
    assert.equal(sent.length, 0);
    assert.equal((await files('', 'new')).length, 1);
  });

  it('redirect: when the store cannot record a queued redirect, the delivery still succeeds and a resend redirects again (a duplicate, never a loss)', async () => {
    await activate('redirect "carol@example.test";');
    const set = store.set.bind(store);
    store.set = (key, value, opts) => (key.startsWith('sieve:') && !key.startsWith('sieve:active') ? Promise.reject(new Error('store unavailable')) : set(key, value, opts));
    const r = await deliver({ qid: 'FIRSTQID' });
    assert.equal(r.duplicate, false);
    await deliver({ qid: 'RESENTQID' });
    assert.equal(sent.length, 2);
    assert.deepEqual(await files('', 'new'), []);
  });

  it('duplicate (RFC 7352): a retry of the same message after a temporary failure is not its own duplicate; another copy is', async () => {
    await activate('require "duplicate";\nif duplicate { discard; stop; }\n');
    // The first attempt fails for a while: tmp/ is a file, so the Maildir cannot be made.
    await mkdir(box(), { recursive: true });
    await writeFile(join(box(), 'tmp'), 'not a folder');
    await assert.rejects(deliver({ qid: 'FIRSTQID' }), (e: unknown) => e instanceof DeliveryError && e.temporary);
    await rm(join(box(), 'tmp'));
    await deliver({ qid: 'FIRSTQID', checkExisting: true });
    assert.equal((await files('', 'new')).length, 1, 'the retry stored the message');
    // The same Message-ID again, as another message: a duplicate, discarded.
    await deliver({ qid: 'SECONDQID' });
    assert.equal((await files('', 'new')).length, 1);
  });

  it('fileinto :create to a name that cannot be a folder keeps the message in INBOX, never an error after a copy was stored', async () => {
    await activate('require ["fileinto", "mailbox"];\nkeep;\nfileinto :create "a..b";\n');
    const r = await deliver();
    assert.equal(r.duplicate, false);
    assert.equal((await files('', 'new')).length, 1);
  });

  it('a redirect loop (Delivered-To of this user) keeps the message instead', async () => {
    await activate('redirect "carol@example.test";');
    await deliver({ message: `Delivered-To: ${USER}\r\n${MSG}` });
    assert.equal(sent.length, 0);
    assert.equal((await files('', 'new')).length, 1);
  });

  it('vacation: one reply per sender and period, none to lists, auto-submitted or null senders', async () => {
    await activate('require "vacation";\nvacation :days 1 :subject "Away" "I am away.";\n');
    await deliver();
    await deliver();
    assert.equal(sent.length, 1, 'second message from the same sender within the period');
    const reply = sent[0]!;
    assert.equal(reply.env.mailFrom, '');
    assert.deepEqual(reply.env.recipients, [{ address: 'bob@remote.test' }]);
    assert.match(reply.msg, /\r\nSubject: Away\r\n/);
    assert.match(reply.msg, /\r\nAuto-Submitted: auto-replied/);
    assert.match(reply.msg, /\r\nIn-Reply-To: <m1@remote.test>\r\nReferences: <m1@remote.test>\r\n/);
    assert.match(reply.msg, /\r\n\r\nI am away\.\r\n$/);
    await deliver({ sender: 'dan@remote.test', message: `List-Id: <l.remote.test>\r\n${MSG}` });
    await deliver({ sender: 'erin@remote.test', message: `Auto-Submitted: auto-generated\r\n${MSG}` });
    await deliver({ sender: '' });
    await deliver({ sender: 'fay@remote.test', message: MSG.replace('To: alice@example.test', 'To: other@example.test') });
    assert.equal(sent.length, 1);
    // Every message was still kept (vacation does not cancel the implicit keep).
    assert.equal((await files('', 'new')).length, 6);
    await deliver({ sender: 'gus@remote.test' });
    assert.equal(sent.length, 2, 'another sender gets a reply');
  });

  it('vacation: once queued the reply is recorded for the period; a retry of the same delivery does not send it again', async () => {
    await activate('require "vacation";\nvacation :days 3 "I am away.";\n');
    await deliver({ qid: 'VQ1' });
    await deliver({ qid: 'VQ1', checkExisting: true });
    assert.equal(sent.length, 1);
    const [key] = await store.keys('sieve:vacation:');
    assert.equal(await store.get(key!), 'sent:VQ1');
    const ttl = await store.ttl(key!);
    assert.ok(ttl > 3 * 86400_000 - 60_000 && ttl <= 3 * 86400_000, `ttl ${ttl}`);
  });

  /**
   * A 7-day vacation script on a store whose clock the test moves; `make` builds a delivery (a
   * process) with its own submit, `dying` one whose submit never returns (it died while queueing).
   */
  async function vacationClock() {
    const c = { now: Date.now() };
    const clocked = new MemoryStore({ now: () => c.now });
    await clocked.hset(`sieve:scripts:${USER}`, 'main', 'require "vacation";\nvacation :days 7 "I am away.";\n');
    await clocked.set(`sieve:active:${USER}`, 'main');
    const replies: string[] = [];
    const make = (submit: (env: Envelope) => Promise<string>) => new LocalDelivery(testConfig(t.dir), new DirSyncer(), {}, { store: clocked, submit });
    const replying = () => make(async (env) => (replies.push(env.recipients[0]!.address), `R${replies.length}`));
    const dying = () => make(() => new Promise<string>(() => undefined));
    const req = (qid: string, checkExisting = false) => ({ qid, sender: 'bob@remote.test', receivedAt: c.now, user: USER, message: Buffer.from(MSG), checkExisting });
    const claimed = () => waitUntil(async () => (await clocked.keys('sieve:vacation:')).length === 1);
    return { c, clocked, replies, replying, dying, req, claimed };
  }

  it('vacation: a delivery that died after claiming the reply, before queueing it: its retry sends it, other messages wait for the claim to run out', async () => {
    const v = await vacationClock();
    try {
      // The first process claims the period, then dies while queueing the reply.
      void v.dying().deliver(v.req('CRASHQ'));
      await v.claimed();
      const [key] = await v.clocked.keys('sieve:vacation:');
      assert.equal(await v.clocked.get(key!), 'pending:CRASHQ');
      assert.ok((await v.clocked.ttl(key!)) <= VACATION_PENDING_TTL_MS);

      // After a restart: another message from the sender, meanwhile, gets no second reply...
      const restarted = v.replying();
      await restarted.deliver(v.req('OTHERQ'));
      assert.deepEqual(v.replies, []);
      // ...the retry of the delivery that died sends the reply, once, and records the period.
      await restarted.deliver(v.req('CRASHQ', true));
      await restarted.deliver(v.req('CRASHQ', true));
      assert.deepEqual(v.replies, ['bob@remote.test']);
      assert.equal(await v.clocked.get(key!), 'sent:CRASHQ');
      v.c.now += 6 * 86400_000;
      await restarted.deliver(v.req('LATERQ'));
      assert.deepEqual(v.replies, ['bob@remote.test'], 'still within the period');
    } finally {
      await v.clocked.close();
    }
  });

  it('vacation: a claim whose delivery never came back runs out, and the sender is answered again', async () => {
    const v = await vacationClock();
    try {
      void v.dying().deliver(v.req('LOSTQ'));
      await v.claimed();
      const live = v.replying();
      await live.deliver(v.req('Q2'));
      assert.deepEqual(v.replies, []);
      v.c.now += VACATION_PENDING_TTL_MS + 1;
      await live.deliver(v.req('Q3'));
      assert.deepEqual(v.replies, ['bob@remote.test']);
    } finally {
      await v.clocked.close();
    }
  });

  it('vacation: queueing the reply fails → the claim is removed and the delivery fails for now; the retry sends it', async () => {
    await activate('require "vacation";\nvacation :days 1 "I am away.";\n');
    let fail = true;
    const replies: string[] = [];
    const flaky = new LocalDelivery(testConfig(t.dir), new DirSyncer(), {}, {
      store,
      submit: async (env) => {
        if (fail) throw new Error('spool full');
        replies.push(env.recipients[0]!.address);
        return 'R1';
      },
    });
    const req = (checkExisting: boolean) => ({ qid: 'FLAKYQ', sender: 'bob@remote.test', receivedAt: Date.now(), user: USER, message: Buffer.from(MSG), checkExisting });
    await assert.rejects(flaky.deliver(req(false)), /spool full/);
    assert.deepEqual(await store.keys('sieve:vacation:'), []);
    fail = false;
    await flaky.deliver(req(true));
    assert.deepEqual(replies, ['bob@remote.test']);
  });
});

async function waitUntil(ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out waiting');
}
