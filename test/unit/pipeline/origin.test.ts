// originClient (src/pipeline/origin.ts): the client a message came from is the one a trusted
// peer named with XFORWARD, as a whole, when it named one, else the connection's; and the
// attributes as smtp-server's XFORWARD parser leaves them ([UNAVAILABLE] as false).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forwardedFromAttributes, namesClient, originClient } from '../../../src/pipeline/origin.js';

const peer = { remoteAddress: '127.0.0.2', remotePort: 6000, clientHostname: 'filter.example', helo: 'filter-helo.example' };

test('no XFORWARD: the connection\'s client', () => {
  assert.deepEqual(originClient(peer), { address: '127.0.0.2', port: 6000, hostname: 'filter.example', helo: 'filter-helo.example' });
});

test('XFORWARD naming the client: that client, and only what it said (the peer\'s name and HELO are not its own)', () => {
  assert.deepEqual(originClient({ ...peer, forwarded: { address: '198.51.100.9', port: 4025, hostname: 'outside.example', helo: 'outside.example', ident: 'A1' } }), { address: '198.51.100.9', port: 4025, hostname: 'outside.example', helo: 'outside.example' });
  assert.deepEqual(originClient({ ...peer, forwarded: { address: '198.51.100.9' } }), { address: '198.51.100.9' });
  assert.deepEqual(originClient({ ...peer, forwarded: { hostname: 'outside.example' } }), { hostname: 'outside.example' });
});

test('XFORWARD with only IDENT or SOURCE names no client', () => {
  assert.equal(namesClient({ ident: 'A1', source: 'REMOTE' }), false);
  assert.equal(namesClient(undefined), false);
  assert.deepEqual(originClient({ ...peer, forwarded: { ident: 'A1' } }), originClient(peer));
});

test('the library\'s XFORWARD attributes: [UNAVAILABLE] (false) and empty values are unknown; names lower case', () => {
  const attrs = new Map<string, unknown>([
    ['ADDR:DEFAULT', '127.0.0.2'],
    ['ADDR', '2001:db8::9'],
    ['NAME', 'Outside.Example.'],
    ['PORT', 4025],
    ['HELO', 'outside-helo.example'],
    ['PROTO', 'ESMTP'],
    ['SOURCE', 'remote'],
    ['IDENT', 'A1'],
  ]);
  assert.deepEqual(forwardedFromAttributes(attrs), { address: '2001:db8::9', port: 4025, hostname: 'outside.example', helo: 'outside-helo.example', protocol: 'ESMTP', source: 'REMOTE', ident: 'A1' });
  const unknown = new Map<string, unknown>([['ADDR', false], ['NAME', ''], ['PORT', 0], ['HELO', ''], ['IDENT', false]]);
  assert.deepEqual(forwardedFromAttributes(unknown), {});
});
