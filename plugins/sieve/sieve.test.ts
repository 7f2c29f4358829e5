// The sieve plugin (gateway context) through the real runner: outcome mapping, traces, header
// edits, store rules and their reload, file reload, and the per-recipient envelope.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import plugin, { applyHeaderEdits, RULES_CHANNEL, RULES_KEY, RULES_META_KEY, RULES_VERSION_KEY } from './index.js';
import { testPlugin } from '../../src/pipeline/harness.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createMessage } from '../../src/pipeline/message.js';
import { applyReroute } from '../../src/smtp/session.js';

const MSG = 'From: a@sender.test\nTo: rcpt@example.test\nSubject: hello\nX-Old: 1\n\nbody text here\n';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-sieve-plugin-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The harness has no config file (baseDir is the process folder): scripts get absolute paths. */
async function withScript(script: string, opts: Record<string, unknown> = {}) {
  const file = join(dir, `r${Math.random().toString(36).slice(2)}.sieve`);
  await writeFile(file, script);
  return { h: testPlugin(plugin, { scripts: [file], ...opts }), file };
}

describe('sieve plugin: outcome mapping', () => {
  it('reject by header → 550 5.7.1 with the reason, traced with rule and line', async () => {
    const { h, file } = await withScript('require "reject";\nif header :contains "subject" "hello" {\n  reject "no greetings";\n}\n');
    const r = await h.run('data', { message: MSG });
    assert.equal(r.verdict.kind, 'reject');
    assert.deepEqual(r.verdict, { kind: 'reject', code: 550, enhanced: '5.7.1', text: 'no greetings' });
    const own = r.trace.find((t) => t.rule);
    assert.ok(own, JSON.stringify(r.trace));
    assert.equal(own.rule, file.split('/').pop());
    assert.equal(own.line, 3);
    assert.equal(own.verdict, 'reject');
    await h.close();
  });

  it('ereject by body and by envelope', async () => {
    const { h } = await withScript('require ["ereject", "body", "envelope"];\nif body :contains "forbidden" { ereject "body"; }\nif envelope :domain "from" "bad.test" { ereject "envelope"; }\n');
    assert.equal((await h.run('data', { message: MSG + 'forbidden\n' })).verdict.kind, 'reject');
    const env = await h.run('data', { message: MSG, tx: { mailFrom: 'x@bad.test' } });
    assert.equal(env.verdict.kind === 'reject' && env.verdict.text, 'envelope');
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'next');
    await h.close();
  });

  it('discard, fileinto, fileinto :copy, redirect', async () => {
    const cases: [string, unknown][] = [
      ['discard;', { kind: 'discard', reason: 'sieve: discarded' }],
      ['require "fileinto"; fileinto "Quarantine";', { plan: { 'rcpt@example.test': ['Quarantine'] } }],
      ['require ["fileinto", "copy"]; fileinto :copy "Archive";', { plan: { 'rcpt@example.test': ['Archive', 'INBOX'] } }],
      ['redirect "other@example.test";', { plan: { 'rcpt@example.test': [] }, redirect: ['other@example.test'] }],
      ['require "copy"; redirect :copy "other@example.test";', { redirect: ['other@example.test'] }],
      ['keep;', { kind: 'next' }],
    ];
    for (const [script, want] of cases) {
      const { h } = await withScript(script);
      const r = await h.run('data', { message: MSG, tx: { recipients: [{ address: 'rcpt@example.test' }] } });
      if ((want as { kind?: string }).kind) assert.deepEqual(r.verdict, want, script);
      else {
        assert.equal(r.verdict.kind, 'reroute', script);
        const v = r.verdict as { plan?: unknown; redirect?: unknown };
        assert.deepEqual(v.plan, (want as { plan?: unknown }).plan ?? {}, script);
        assert.deepEqual(v.redirect, (want as { redirect?: unknown }).redirect, script);
      }
      await h.close();
    }
  });

  it('environment remote-ip / remote-host: the client a content filter named with XFORWARD, else the connection\'s', async () => {
    const { h } = await withScript('require ["environment", "fileinto"];\nif environment :is "remote-ip" "192.0.2.9" { fileinto "Origin"; }\nif environment :is "remote-host" "origin.test" { fileinto "Host"; }\nif environment :is "remote-ip" "127.0.0.1" { fileinto "Filter"; }\n');
    const tx = { recipients: [{ address: 'rcpt@example.test' }] };
    const plan = (v: unknown) => (v as { plan?: Record<string, string[]> }).plan?.['rcpt@example.test'];
    h.newConnection({ remoteAddress: '127.0.0.1', clientHostname: 'localhost' });
    assert.deepEqual(plan((await h.run('data', { message: MSG, tx, forwarded: { address: '192.0.2.9', hostname: 'origin.test' } })).verdict), ['Origin', 'Host']);
    assert.deepEqual(plan((await h.run('data', { message: MSG, tx, forwarded: null })).verdict), ['Filter']);
    await h.close();
  });

  it('addheader and deleteheader edit the queued message', async () => {
    const { h } = await withScript('require "editheader";\naddheader "X-Sieve" "checked";\naddheader :last "X-Last" "end";\ndeleteheader "X-Old";\n');
    const r = await h.run('data', { message: MSG });
    assert.equal(r.verdict.kind, 'next');
    const out = r.message!.render().toString();
    assert.match(out, /^X-Sieve: checked\r\n/);
    assert.match(out, /Subject: hello\r\nX-Last: end\r\n\r\nbody/);
    assert.doesNotMatch(out, /X-Old/);
    await h.close();
  });

  it('each recipient runs with its own envelope "to"; any refusal refuses the message', async () => {
    const { h } = await withScript('require ["envelope", "fileinto", "reject"];\nif envelope :localpart "to" "abuse" { fileinto "Abuse"; }\nif envelope :localpart "to" "nobody" { reject "gone"; }\n');
    const two = { recipients: [{ address: 'abuse@example.test' }, { address: 'bob@example.test' }] };
    const r = await h.run('data', { message: MSG, tx: two });
    assert.deepEqual(r.verdict, { kind: 'reroute', plan: { 'abuse@example.test': ['Abuse'] }, reason: 'sieve: abuse@example.test → Abuse' });
    const three = { recipients: [...two.recipients, { address: 'nobody@example.test' }] };
    assert.equal((await h.run('data', { message: MSG, tx: three })).verdict.kind, 'reject');
    await h.close();
  });

  it('a runtime error keeps the message and is traced', async () => {
    const { h } = await withScript('require "reject";\nreject "a"; keep;\n');
    const r = await h.run('data', { message: MSG });
    assert.equal(r.verdict.kind, 'next');
    assert.ok(r.trace.some((t) => t.verdict === 'error' && t.rule && /runtime error/.test(t.detail ?? '')));
    await h.close();
  });
});

describe('sieve plugin: loading and caching', () => {
  it('a file that does not compile, or does not exist, stops the plugin before init: key path and FILE:LINE:COL', async () => {
    const { h, file } = await withScript('if true {\n  filein "x";\n}\n');
    await assert.rejects(h.run('data', { message: MSG }), (e: Error) => e.message.startsWith(`sieve.scripts.0: ${file}:2:`));
    await h.close();
    const missing = join(dir, 'missing.sieve');
    const m = testPlugin(plugin, { scripts: [missing] });
    await assert.rejects(m.run('data', { message: MSG }), (e: Error) => e.message === `sieve.scripts.0: no such file: ${missing}`);
    await m.close();
  });

  it('store rules run after the files, in name order, and reload on a "rules" event', async () => {
    const { h } = await withScript('require "editheader"; addheader "X-File" "1";');
    const store = h.store;
    await store.hset(RULES_KEY, 'b-second', 'require "reject"; if exists "X-First" { reject "second saw first"; }');
    await store.hset(RULES_KEY, 'a-first', 'require "editheader"; if exists "X-File" { addheader "X-First" "1"; }');
    const r = await h.run('data', { message: MSG });
    assert.equal(r.verdict.kind === 'reject' && r.verdict.text, 'second saw first');
    // Changed without an event: the cached version still runs.
    await store.hdel(RULES_KEY, 'b-second');
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'reject');
    await store.publish(RULES_CHANNEL, JSON.stringify({ op: 'delete', name: 'b-second' }));
    await new Promise((res) => setImmediate(res));
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'next');
    // A stored rule that does not compile is skipped, not fatal.
    await store.hset(RULES_KEY, 'c-bad', 'nonsense;');
    await store.publish(RULES_CHANNEL, '{}');
    await new Promise((res) => setImmediate(res));
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'next');
    await h.close();
  });

  it('a changed file is compiled again (by mtime)', async () => {
    const { h, file } = await withScript('keep;');
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'next');
    await writeFile(file, 'discard;');
    const later = new Date(Date.now() + 5000);
    await utimes(file, later, later);
    await new Promise((res) => setTimeout(res, 1100));
    assert.equal((await h.run('data', { message: MSG })).verdict.kind, 'discard');
    await h.close();
  });
});

describe('sieve plugin: store rule stage, order, activation and pinning', () => {
  const EARLY = 'require ["reject", "envelope"]; if envelope :localpart "from" "mallory" { reject "early"; }';
  const FOLDER = (f: string) => `require "fileinto"; fileinto "${f}";`;
  const meta = (stage: string, position: number, active = true) => JSON.stringify({ stage, position, active });
  const announce = async (h: ReturnType<typeof testPlugin>) => {
    await h.store.publish(RULES_CHANNEL, '{}');
    await new Promise((res) => setImmediate(res));
  };

  it('inactive rules do not run; position decides the order; a stage-data rule does not run at RCPT', async () => {
    const h = testPlugin(plugin, {});
    await h.store.hset(RULES_KEY, 'a', FOLDER('A'));
    await h.store.hset(RULES_KEY, 'b', FOLDER('B'));
    await h.store.hset(RULES_KEY, 'early', EARLY);
    await h.store.hset(RULES_META_KEY, 'a', meta('data', 2));
    await h.store.hset(RULES_META_KEY, 'b', meta('data', 1));
    const folders = async () => {
      const v = (await h.run('data', { message: MSG })).verdict;
      return v.kind === 'reroute' ? v.plan?.['rcpt@example.test'] : v.kind;
    };
    assert.deepEqual(await folders(), ['B']);
    await h.store.hset(RULES_META_KEY, 'b', meta('data', 1, false));
    await announce(h);
    assert.deepEqual(await folders(), ['A']);
    // Without metadata, the envelope-only rule comes after the positioned ones, which read the
    // message: it runs at DATA, not at RCPT.
    const rcpt = () => h.run('rcpt', { rcpt: 'x@example.test', tx: { mailFrom: 'mallory@evil.test' } });
    assert.equal((await rcpt()).verdict.kind, 'next', 'after rules of stage data: not run at RCPT');
    await h.store.hset(RULES_META_KEY, 'early', meta('rcpt', 1));
    await announce(h);
    assert.equal((await rcpt()).verdict.kind, 'reject', 'first: decided at RCPT');
    await h.store.hset(RULES_META_KEY, 'early', meta('rcpt', 1, false));
    await announce(h);
    assert.equal((await rcpt()).verdict.kind, 'next', 'inactive: not run at all');
    await h.close();
  });

  it('rules run in name order: an envelope-only rule waits for the rules before it that read the message', async () => {
    const h = testPlugin(plugin, {});
    await h.store.hset(RULES_KEY, 'aaa', 'require "reject"; if header :contains "subject" "hello" { reject "from aaa"; }');
    await h.store.hset(RULES_KEY, 'zzz', 'require ["reject", "envelope"]; if envelope :is "from" "order@b.example" { reject "from zzz"; }');
    const tx = { mailFrom: 'order@b.example', recipients: [{ address: 'rcpt@example.test' }] };
    assert.equal((await h.run('rcpt', { rcpt: 'rcpt@example.test', tx })).verdict.kind, 'next');
    const v = (await h.run('data', { message: MSG, tx })).verdict;
    assert.equal(v.kind === 'reject' && v.text, 'from aaa');
    await h.close();
  });

  it('at RCPT the envelope-only rules that lead run in order: an earlier keep; stop; lets the sender through', async () => {
    const h = testPlugin(plugin, {});
    await h.store.hset(RULES_KEY, '10-allow', 'require "envelope"; if envelope :is "from" "boss@partner.test" { keep; stop; }');
    await h.store.hset(RULES_KEY, '20-quiet', 'require "envelope"; if envelope :domain "from" "partner.test" { stop; }');
    await h.store.hset(RULES_KEY, '30-block', 'require ["reject", "envelope"]; if envelope :domain "from" "partner.test" { reject "blocked"; }');
    const rcpt = (from: string) => h.run('rcpt', { rcpt: 'rcpt@example.test', tx: { mailFrom: from } });
    assert.equal((await rcpt('boss@partner.test')).verdict.kind, 'next', 'keep ends the run: 30-block does not run');
    // A stop alone ends only its own script (the implicit keep stands), as at DATA.
    const other = (await rcpt('other@partner.test')).verdict;
    assert.equal(other.kind === 'reject' && other.text, 'blocked');
    await h.close();
  });

  it('MAIL pins the rule set: RCPT and DATA of that transaction run it after a change; the version is traced', async () => {
    const h = testPlugin(plugin, {});
    await h.store.hset(RULES_KEY, 'r', FOLDER('Old'));
    await h.store.set(RULES_VERSION_KEY, '7');
    const mail = await h.run('mail', {});
    assert.deepEqual(
      mail.trace.filter((t) => t.version).map((t) => [t.stage, t.verdict, t.version]),
      [['mail', 'next', '7']],
    );
    await h.store.hset(RULES_KEY, 'r', FOLDER('New'));
    await h.store.set(RULES_VERSION_KEY, '8');
    await announce(h);
    const old = await h.run('data', { message: MSG });
    assert.equal(old.verdict.kind === 'reroute' && old.verdict.plan?.['rcpt@example.test']?.[0], 'Old');
    assert.ok(old.trace.some((t) => t.rule === 'r' && t.version === '7'));
    // The next transaction (fresh notes, as the SMTP session gives each MAIL) runs version 8.
    h.newConnection();
    await h.run('mail', {});
    const now = await h.run('data', { message: MSG });
    assert.equal(now.verdict.kind === 'reroute' && now.verdict.plan?.['rcpt@example.test']?.[0], 'New');
    assert.ok(now.trace.some((t) => t.rule === 'r' && t.version === '8'));
    await h.close();
  });

  it('a change event during a read does not leave the older read cached', async () => {
    class SlowStore extends MemoryStore {
      gate: Promise<void> | null = null;
      override async hgetall(key: string): Promise<Record<string, string>> {
        const v = await super.hgetall(key);
        if (this.gate && key === RULES_KEY) await this.gate;
        return v;
      }
    }
    const store = new SlowStore();
    const h = testPlugin(plugin, {}, { store });
    await store.hset(RULES_KEY, 'r', FOLDER('Old'));
    let open!: () => void;
    store.gate = new Promise((res) => (open = res));
    const slow = h.run('data', { message: MSG });
    await new Promise((res) => setTimeout(res, 10));
    await store.hset(RULES_KEY, 'r', FOLDER('New'));
    await announce(h);
    store.gate = null;
    open();
    await slow;
    const v = (await h.run('data', { message: MSG })).verdict;
    assert.equal(v.kind === 'reroute' && v.plan?.['rcpt@example.test']?.[0], 'New');
    await h.close();
  });

  it('when the store cannot be read, the last rule set read keeps running', async () => {
    class FlakyStore extends MemoryStore {
      down = false;
      override async hgetall(key: string): Promise<Record<string, string>> {
        if (this.down) throw new Error('store unavailable');
        return super.hgetall(key);
      }
    }
    const store = new FlakyStore();
    const h = testPlugin(plugin, {}, { store });
    await store.hset(RULES_KEY, 'r', FOLDER('Kept'));
    const folder = async () => {
      const v = (await h.run('data', { message: MSG })).verdict;
      return v.kind === 'reroute' ? v.plan?.['rcpt@example.test']?.[0] : v.kind;
    };
    assert.equal(await folder(), 'Kept');
    store.down = true;
    await announce(h);
    assert.equal(await folder(), 'Kept');
    await h.close();
  });
});

describe('helpers', () => {
  it('applyHeaderEdits replays additions and deletions', () => {
    const before = Buffer.from('A: 1\r\nB: 2\r\nB: 3\r\n\r\nx');
    const after = Buffer.from('Top: t\r\nA: 1\r\nB: 3\r\nEnd: e\r\n\r\nx');
    const m = createMessage(before);
    applyHeaderEdits(m.headers, before, after);
    assert.equal(m.render().toString(), 'Top: t\r\nA: 1\r\nB: 3\r\nEnd: e\r\n\r\nx');
  });

  it('applyReroute: folders, dropped recipients, redirects added once', () => {
    const rcpts = [{ address: 'a@x.test' }, { address: 'b@x.test' }, { address: 'c@x.test' }];
    const r = applyReroute(rcpts, { kind: 'reroute', plan: { 'a@x.test': ['Junk'], 'b@x.test': [], 'c@x.test': ['INBOX', 'Archive'] }, redirect: ['d@y.test', 'D@y.test'] });
    assert.deepEqual(r.recipients, [{ address: 'a@x.test', folder: 'Junk' }, { address: 'c@x.test', folders: ['INBOX', 'Archive'] }, { address: 'd@y.test' }]);
    assert.equal(r.changedList, true);
    const same = applyReroute([{ address: 'a@x.test' }], { kind: 'reroute', plan: { 'a@x.test': ['Q'] } });
    assert.equal(same.changedList, false);
  });
});
