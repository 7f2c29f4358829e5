// The script repository over the Store (RFC 5804 §1.1, §1.6, §2.3–§2.11): names, quotas, the
// active pointer through rename and delete, change events, and getActiveScript for delivery.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_SCRIPT_SIZE, MAX_SCRIPTS_PER_USER } from '../../../src/managesieve/limits.js';
import { getActiveScript, invalidScriptName, ScriptError, ScriptRepository, SIEVE_CHANNEL, type ScriptErrorCode } from '../../../src/managesieve/repository.js';
import { createMemoryStore } from '../../../src/store/memory.js';

const U = 'alice@example.test';

async function rejects(p: Promise<unknown>, code: ScriptErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof ScriptError && e.code === code);
}

describe('ScriptRepository', () => {
  it('stores, lists in name order, activates, renames and deletes, publishing each change', async () => {
    const store = createMemoryStore();
    const events: unknown[] = [];
    store.subscribe(SIEVE_CHANNEL, (ev) => events.push(JSON.parse(ev.message)));
    const repo = new ScriptRepository(store);
    await repo.put(U, 'work', 'keep;');
    await repo.put(U, 'home', 'discard;');
    assert.equal(await getActiveScript(store, U), null);
    await repo.setActive(U, 'work');
    assert.deepEqual(await repo.list(U), [
      { name: 'home', active: false },
      { name: 'work', active: true },
    ]);
    assert.deepEqual(await getActiveScript(store, U), { name: 'work', script: 'keep;' });
    await rejects(repo.delete(U, 'work'), 'active');
    await rejects(repo.rename(U, 'work', 'home'), 'already-exists');
    await rejects(repo.rename(U, 'nope', 'x'), 'nonexistent');
    await repo.rename(U, 'work', 'office');
    assert.deepEqual(await getActiveScript(store, U), { name: 'office', script: 'keep;' });
    await rejects(repo.setActive(U, 'work'), 'nonexistent');
    await repo.setActive(U, '');
    assert.equal(await getActiveScript(store, U), null);
    await repo.delete(U, 'office');
    await rejects(repo.delete(U, 'office'), 'nonexistent');
    assert.deepEqual(await repo.list(U), [{ name: 'home', active: false }]);
    assert.deepEqual(await repo.list('bob@example.test'), [], 'users are separate');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      events.map((e) => (e as { op: string }).op),
      ['put', 'put', 'activate', 'rename', 'deactivate', 'delete'],
    );
  });

  it('enforces the size and count quotas; replacing a script does not count', async () => {
    const repo = new ScriptRepository(createMemoryStore());
    await rejects(repo.checkSpace(U, 'big', MAX_SCRIPT_SIZE + 1), 'quota-size');
    await rejects(repo.put(U, 'big', 'x'.repeat(MAX_SCRIPT_SIZE + 1)), 'quota-size');
    for (let i = 0; i < MAX_SCRIPTS_PER_USER; i++) await repo.put(U, `s${i}`, 'keep;');
    await rejects(repo.put(U, 'one-more', 'keep;'), 'quota-count');
    await repo.put(U, 's0', 'discard;');
    assert.equal(await repo.get(U, 's0'), 'discard;');
  });

  it('a dangling active pointer means no script', async () => {
    const store = createMemoryStore();
    await store.set(`sieve:active:${U}`, 'gone');
    assert.equal(await getActiveScript(store, U), null);
  });

  it('refuses names RFC 5804 §1.6 forbids', () => {
    for (const bad of ['', 'a\u0000b', 'tab\there', 'del\u007f', 'c1\u0085', 'ls\u2028', 'x'.repeat(300), '\ud800']) {
      assert.notEqual(invalidScriptName(bad), null, JSON.stringify(bad));
    }
    for (const good of ['work', 'Grüße 😀', 'a "quoted" name', 'x'.repeat(256)]) assert.equal(invalidScriptName(good), null, good);
  });
});
