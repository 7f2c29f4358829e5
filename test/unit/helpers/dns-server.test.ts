// The test DNS server answers the real resolver (src/dns/resolver.ts) as a DNS server would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer } from '../../helpers/dns-server.js';
import { createResolver, DnsError } from '../../../src/dns/resolver.js';

test('answers A, AAAA, MX, TXT, PTR; NXDOMAIN and NODATA are empty; queries are logged', async () => {
  const dns = await startDnsServer({
    records: {
      'mx.example.test': { A: ['192.0.2.10'], AAAA: ['2001:db8::10'], MX: [{ exchange: 'in.example.test', priority: 10 }], TXT: ['v=spf1 -all', 'x'.repeat(300)] },
      '10.2.0.192.in-addr.arpa': { PTR: ['mx.example.test'] },
    },
  });
  try {
    const r = createResolver({ servers: [dns.server], timeout: 1000, tries: 1 });
    assert.deepEqual(await r.resolve4('MX.example.test'), ['192.0.2.10']);
    assert.deepEqual(await r.resolve6('mx.example.test'), ['2001:db8::10']);
    assert.deepEqual(await r.resolveMx('mx.example.test'), [{ exchange: 'in.example.test', priority: 10 }]);
    assert.deepEqual((await r.resolveTxt('mx.example.test')).sort(), ['v=spf1 -all', 'x'.repeat(300)].sort());
    assert.deepEqual(await r.reverse('192.0.2.10'), ['mx.example.test']);
    assert.deepEqual(await r.resolve4('nothing.example.test'), [], 'NXDOMAIN');
    assert.deepEqual(await r.resolve4('10.2.0.192.in-addr.arpa'), [], 'NODATA');
    assert.equal(dns.count('mx.example.test'), 4);
    assert.ok(dns.queries.some((q) => q.name === 'nothing.example.test' && q.type === 'A'));
    dns.setRecords({ 'new.example.test': { A: ['192.0.2.99'] } });
    assert.deepEqual(await r.resolve4('new.example.test'), ['192.0.2.99']);
  } finally {
    await dns.stop();
  }
});

test('drop times out, servfail fails, delay answers late', async () => {
  const dns = await startDnsServer({
    records: { 'slow.test': { A: ['192.0.2.1'] }, 'dead.test': { A: ['192.0.2.2'] }, 'broken.test': { A: ['192.0.2.3'] } },
    behaviour: (name) => (name === 'dead.test' ? 'drop' : name === 'broken.test' ? 'servfail' : name === 'slow.test' ? { delayMs: 150 } : 'answer'),
  });
  try {
    const r = createResolver({ servers: [dns.server], timeout: 400, tries: 1 });
    const t0 = Date.now();
    assert.deepEqual(await r.resolve4('slow.test'), ['192.0.2.1']);
    assert.ok(Date.now() - t0 >= 140);
    await assert.rejects(r.resolve4('dead.test'), (e) => e instanceof DnsError && e.code === 'ETIMEOUT');
    await assert.rejects(r.resolve4('broken.test'), (e) => e instanceof DnsError && e.code === 'ESERVFAIL');
  } finally {
    await dns.stop();
  }
});
