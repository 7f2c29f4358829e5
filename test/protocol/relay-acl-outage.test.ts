// relay-acl while the store cannot be read, through the real SMTP core: a recipient it would
// refuse, but that a run-time list it could not read might have allowed, gets 451 4.3.0, never
// 554 (a trusted client's mail would bounce), and never a pass to the rest of the chain, where a
// later plugin's accept at RCPT would relay for an untrusted client (hence no fail-open either).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { greeted, withPlugins } from '../helpers/xclient-listener.js';
import { failingStore } from '../helpers/failing-store.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHarness } from '../helpers/fakes.js';
import { RECIPIENT_ACCESS_KEY, RELAY_NETWORKS_KEY } from '../../src/policy/access.js';
import { LiveRoutes, RELAY_ROUTES_KEY } from '../../src/policy/routes.js';
import { MemoryStore } from '../../src/store/memory.js';

const UNAVAILABLE = /^451 4\.3\.0 Relay policy unavailable, try again later$/;
const ACCEPT_RCPT = fileURLToPath(new URL('../fixtures/plugins/accept-rcpt.ts', import.meta.url));
// 127.0.0.5 is in no configured relay network; the store's run-time list may trust it.
const CLIENT = '127.0.0.5';

async function rcptReply(plugins: unknown[], down: string[], rcpt: string, trustAtRunTime: boolean): Promise<string> {
  const unreadable = new Set<string>();
  const store = failingStore(unreadable);
  if (trustAtRunTime) await store.hset(RELAY_NETWORKS_KEY, 'n1', `${CLIENT}/32`);
  for (const key of down) unreadable.add(key);
  const h = await withPlugins(plugins, { store });
  try {
    const s = await greeted(h.ports.smtp!, CLIENT, 'client.example');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    s.send(`RCPT TO:<${rcpt}>`);
    const reply = (await s.reply())!;
    s.close();
    return reply;
  } finally {
    await h.close();
    await store.close();
  }
}

const cases: [string, unknown[], string[], string, boolean, RegExp][] = [
  ['run-time networks unreadable, a client they trust', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x@elsewhere.test', true, UNAVAILABLE],
  ['… a routing trick', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x%elsewhere.test@example.test', true, UNAVAILABLE],
  ['… an IP literal', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x@[192.0.2.1]', true, UNAVAILABLE],
  ['networks unreadable, an untrusted client, a later plugin accepts', ['relay-acl', ACCEPT_RCPT], [RELAY_NETWORKS_KEY], 'x@elsewhere.test', false, UNAVAILABLE],
  ['recipient access list unreadable, a later plugin accepts', ['relay-acl', ACCEPT_RCPT], [RECIPIENT_ACCESS_KEY], 'x@elsewhere.test', false, UNAVAILABLE],
  ['store readable: an untrusted client is refused, a later plugin accepting or not', ['relay-acl', ACCEPT_RCPT], [], 'x@elsewhere.test', false, /^554 5\.7\.1 /],
  ['store readable: a client the run-time networks trust relays', ['relay-acl'], [], 'x@elsewhere.test', true, /^250 /],
];

for (const [what, plugins, down, rcpt, trusted, want] of cases) {
  test(`relay-acl, store outage: ${what}`, async () => {
    assert.match(await rcptReply(plugins, down, rcpt, trusted), want);
  });
}

// Without relay-acl the core decides: a domain the store's routes may hold is not refused for
// good while they have never been read.
test('no relay-acl, store routes never read: 451 4.3.0 for a domain they may hold, then the route applies', async () => {
  const down = new Set<string>();
  const store = failingStore(down);
  await store.hset(RELAY_ROUTES_KEY, 'partner.test', JSON.stringify({ domain: 'partner.test', nexthop: 'smtp://10.0.0.9:25' }));
  down.add(RELAY_ROUTES_KEY);
  const h = await startHarness({ routes: (config) => new LiveRoutes(config.routes, store) });
  try {
    const s = await greeted(h.ports.smtp!, CLIENT, 'client.example');
    await s.cmd('MAIL FROM:<a@sender.example>', '250');
    await s.cmd('RCPT TO:<x@partner.test>', '451 4.3.0 Temporary lookup failure');
    await s.cmd('RCPT TO:<x%partner.test@elsewhere.test>', '554 5.7.1');
    down.clear();
    await s.cmd('RCPT TO:<x@partner.test>', '250');
    await s.cmd('RCPT TO:<x@elsewhere.test>', '554 5.7.1');
    down.add(RELAY_ROUTES_KEY); // read once: the last good routes stand in
    await s.cmd('RCPT TO:<y@partner.test>', '250');
    await s.cmd('RCPT TO:<y@elsewhere.test>', '554 5.7.1');
    s.close();
  } finally {
    await h.close();
  }
});

// A relay-acl hook that times out (the store hangs) is the runner's 451: the chain stops there,
// so a later plugin's accept never relays.
for (const key of [RELAY_NETWORKS_KEY, RECIPIENT_ACCESS_KEY, RELAY_ROUTES_KEY]) {
  test(`relay-acl timing out on ${key}, a later plugin accepts: 451, and 554 once the store answers`, async () => {
    const store = new MemoryStore();
    const { hgetall } = store;
    let hang = false;
    store.hgetall = async (k) => {
      if (hang && k === key) await sleep(400);
      return hgetall.call(store, k);
    };
    const h = await withPlugins([{ 'relay-acl': { timeout: '100ms' } }, ACCEPT_RCPT], { store });
    try {
      const s = await greeted(h.ports.smtp!, CLIENT, 'client.example');
      await s.cmd('MAIL FROM:<a@sender.example>', '250');
      hang = true;
      await s.cmd('RCPT TO:<x@elsewhere.test>', '451 4.3.0 Policy check unavailable');
      await sleep(500); // the late hook finishes; its answer is dropped
      hang = false;
      await s.cmd('RCPT TO:<y@elsewhere.test>', '554 5.7.1');
      s.close();
    } finally {
      await h.close();
    }
  });
}
