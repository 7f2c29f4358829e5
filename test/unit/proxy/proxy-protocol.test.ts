// The PROXY protocol parser (HAProxy spec v1 and v2), table-driven: good headers of both versions,
// partial input, and every malformed shape we refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildProxyHeader, parseProxyHeader, V2_SIGNATURE } from '../../../src/proxy/proxy-protocol.js';

const v2 = (verCmd: number, fam: number, body: Buffer) => {
  const h = Buffer.alloc(4);
  h.writeUInt8(verCmd, 0);
  h.writeUInt8(fam, 1);
  h.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, h, body]);
};

test('v1: TCP4 and TCP6 give source and destination; the rest of the buffer is left alone', () => {
  const b = Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\nEHLO x\r\n');
  const r = parseProxyHeader(b);
  assert.equal(r.kind, 'done');
  if (r.kind !== 'done') return;
  assert.deepEqual(r.source, { version: 1, remoteAddress: '192.0.2.7', remotePort: 51000, localAddress: '198.51.100.1', localPort: 25 });
  assert.equal(b.subarray(r.consumed).toString(), 'EHLO x\r\n');
  const r6 = parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n'));
  assert.equal(r6.kind === 'done' && r6.source.remoteAddress, '2001:db8::7');
  const unk = parseProxyHeader(Buffer.from('PROXY UNKNOWN whatever here\r\n'));
  assert.deepEqual(unk.kind === 'done' && unk.source, { version: 1 });
});

test('v2: PROXY over IPv4 and IPv6, LOCAL keeps the socket address, TLVs are skipped', () => {
  const h4 = buildProxyHeader(2, { address: '192.0.2.7', port: 40000 }, { address: '198.51.100.1', port: 25 });
  const withTlv = Buffer.concat([h4.subarray(0, 14), Buffer.from([0, 12 + 5]), h4.subarray(16), Buffer.from([0x04, 0x00, 0x02, 0xaa, 0xbb]), Buffer.from('EHLO')]);
  for (const b of [h4, withTlv]) {
    const r = parseProxyHeader(b);
    assert.equal(r.kind, 'done');
    if (r.kind !== 'done') return;
    assert.deepEqual(r.source, { version: 2, remoteAddress: '192.0.2.7', remotePort: 40000, localAddress: '198.51.100.1', localPort: 25 });
  }
  const rt = parseProxyHeader(withTlv);
  assert.equal(rt.kind === 'done' && withTlv.subarray(rt.consumed).toString(), 'EHLO');
  const h6 = parseProxyHeader(buildProxyHeader(2, { address: '2001:db8::7', port: 1 }, { address: '2001:db8:0:0:0:0:0:1', port: 2 }));
  assert.deepEqual(h6.kind === 'done' && h6.source, { version: 2, remoteAddress: '2001:db8::7', remotePort: 1, localAddress: '2001:db8::1', localPort: 2 });
  const local = parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0)));
  assert.deepEqual(local.kind === 'done' && local.source, { version: 2 });
  const unix = parseProxyHeader(v2(0x21, 0x31, Buffer.alloc(216)));
  assert.deepEqual(unix.kind === 'done' && unix.source, { version: 2 });
});

test('partial headers of either version ask for more bytes', () => {
  const full1 = Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\n');
  const full2 = buildProxyHeader(2, { address: '192.0.2.7', port: 1 }, { address: '192.0.2.8', port: 2 });
  for (const full of [full1, full2]) {
    for (let n = 1; n < full.length; n++) assert.equal(parseProxyHeader(full.subarray(0, n)).kind, 'more', `${n} bytes`);
  }
});

const BAD: [string, Buffer, RegExp][] = [
  ['an SMTP command', Buffer.from('EHLO client.example\r\n'), /not a PROXY/],
  ['lower-case v1', Buffer.from('proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n'), /not a PROXY/],
  ['v1 without CR', Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n'), /CRLF/],
  ['v1 unknown protocol', Buffer.from('PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n'), /TCP4, TCP6 or UNKNOWN/],
  ['v1 missing port', Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n'), /both ports/],
  ['v1 hostname as source', Buffer.from('PROXY TCP4 evil.example 198.51.100.1 1 2\r\n'), /not TCP4 addresses/],
  ['v1 IPv6 under TCP4', Buffer.from('PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n'), /not TCP4 addresses/],
  ['v1 port too big', Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 70000 2\r\n'), /ports/],
  ['v1 port with a leading zero', Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 025 2\r\n'), /ports/],
  ['v1 longer than 107 bytes', Buffer.from(`PROXY UNKNOWN ${'x'.repeat(120)}\r\n`), /107 bytes/],
  ['v1 with no end in sight', Buffer.from(`PROXY TCP4 ${'1'.repeat(110)}`), /107 bytes/],
  ['v2 version 3', v2(0x31, 0x11, Buffer.alloc(12)), /version nibble/],
  ['v2 command 2', v2(0x22, 0x11, Buffer.alloc(12)), /LOCAL or PROXY/],
  ['v2 IPv4 block too short', v2(0x21, 0x11, Buffer.alloc(8)), /shorter than 12/],
  ['v2 IPv6 block too short', v2(0x21, 0x21, Buffer.alloc(20)), /shorter than 36/],
  ['v2 unknown family', v2(0x21, 0x41, Buffer.alloc(12)), /family 4/],
  ['v2 unknown transport', v2(0x21, 0x13, Buffer.alloc(12)), /STREAM or DGRAM/],
  ['v2 length beyond our bound', Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]), /too long/],
];

for (const [name, buf, reason] of BAD) {
  test(`refused: ${name}`, () => {
    const r = parseProxyHeader(buf);
    assert.equal(r.kind, 'bad');
    assert.match(r.kind === 'bad' ? r.reason : '', reason);
  });
}
