// relay-acl while the store cannot be read, through the real SMTP core: a recipient it would
// refuse, but that a run-time list it could not read might have allowed, gets 451 4.3.0, never
// 554 (a trusted client's mail would bounce), and never a pass to the rest of the chain, where a
// later plugin's accept at RCPT would relay for an untrusted client (hence no fail-open either).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { greeted, withPlugins } from '../helpers/xclient-listener.js';
import { failingStore } from '../helpers/failing-store.js';
import { RECIPIENT_ACCESS_KEY, RELAY_NETWORKS_KEY } from '../../src/policy/access.js';

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
  ['run-time networks unreadable, a client they trust', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x@elsewhere.test', true, /^451 4\.3\.0 /],
  ['… a routing trick', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x%elsewhere.test@example.test', true, /^451 4\.3\.0 /],
  ['… an IP literal', ['relay-acl'], [RELAY_NETWORKS_KEY], 'x@[192.0.2.1]', true, /^451 4\.3\.0 /],
  ['networks unreadable, an untrusted client, a later plugin accepts', ['relay-acl', ACCEPT_RCPT], [RELAY_NETWORKS_KEY], 'x@elsewhere.test', false, /^451 4\.3\.0 /],
  ['recipient access list unreadable, a later plugin accepts', ['relay-acl', ACCEPT_RCPT], [RECIPIENT_ACCESS_KEY], 'x@elsewhere.test', false, /^451 4\.3\.0 /],
  ['store readable: an untrusted client is refused, a later plugin accepting or not', ['relay-acl', ACCEPT_RCPT], [], 'x@elsewhere.test', false, /^554 5\.7\.1 /],
  ['store readable: a client the run-time networks trust relays', ['relay-acl'], [], 'x@elsewhere.test', true, /^250 /],
];

for (const [what, plugins, down, rcpt, trusted, want] of cases) {
  test(`relay-acl, store outage: ${what}`, async () => {
    assert.match(await rcptReply(plugins, down, rcpt, trusted), want);
  });
}
