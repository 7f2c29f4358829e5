// The PROXY protocol header a load balancer (HAProxy, nginx stream, AWS NLB, …) writes before
// the first SMTP byte, so the listener learns the real client address. Both versions of the
// HAProxy specification ("The PROXY protocol", versions 1 and 2):
//
//   v1  one text line, at most 107 bytes with CRLF:
//         "PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\n"   (TCP6, or UNKNOWN + anything)
//   v2  a 12-byte signature, version/command, family/protocol, a 16-bit length, the addresses
//       (IPv4 12 bytes, IPv6 36 bytes, UNIX 216 bytes), then TLVs we skip.
//
// The parser is pure: give it the bytes read so far, it answers "need more", "done" (with how
// many bytes the header used, the rest belonging to SMTP) or "bad" with a reason. A header that
// names no address (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or UNIX) keeps the socket's own address, as
// the spec asks (a balancer's health check).
// Config keys read: none (listen.<name>.proxy_protocol is applied by the listener).
import { isIP } from 'node:net';

/** The v2 signature: \r\n\r\n\0\r\nQUIT\n. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The spec's upper bound for a v1 line, CRLF included. */
export const V1_MAX_LENGTH = 107;
/** Our bound for a v2 header (the spec allows 64K of TLVs; we need none). */
export const V2_MAX_LENGTH = 16 + 536 + 2048;

export interface ProxySource {
  /** The original client, or absent when the header names none (LOCAL, UNKNOWN). */
  remoteAddress?: string;
  remotePort?: number;
  /** The address the client connected to (the balancer's front end). */
  localAddress?: string;
  localPort?: number;
  version: 1 | 2;
}

export type ProxyParse = { kind: 'more' } | { kind: 'done'; consumed: number; source: ProxySource } | { kind: 'bad'; reason: string };

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

/** Parses a PROXY header (either version) at the start of `buf`. */
export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return { kind: 'more' };
  // Decide the version from as many bytes as we have; a prefix of either signature waits.
  const v2Len = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.subarray(0, v2Len).equals(V2_SIGNATURE.subarray(0, v2Len))) {
    return buf.length < V2_SIGNATURE.length ? { kind: 'more' } : parseV2(buf);
  }
  const v1Len = Math.min(buf.length, V1_PREFIX.length);
  if (buf.subarray(0, v1Len).equals(V1_PREFIX.subarray(0, v1Len))) {
    return buf.length < V1_PREFIX.length ? { kind: 'more' } : parseV1(buf);
  }
  return { kind: 'bad', reason: 'not a PROXY protocol header' };
}

function parseV1(buf: Buffer): ProxyParse {
  const lf = buf.indexOf(0x0a);
  if (lf < 0) return buf.length >= V1_MAX_LENGTH ? { kind: 'bad', reason: 'v1 header longer than 107 bytes' } : { kind: 'more' };
  if (lf + 1 > V1_MAX_LENGTH) return { kind: 'bad', reason: 'v1 header longer than 107 bytes' };
  if (lf === 0 || buf[lf - 1] !== 0x0d) return { kind: 'bad', reason: 'v1 header must end with CRLF' };
  const consumed = lf + 1;
  const line = buf.subarray(0, lf - 1).toString('latin1');
  const parts = line.split(' ');
  const proto = parts[1];
  // "PROXY UNKNOWN" may carry anything after it; the receiver ignores it.
  if (proto === 'UNKNOWN') return { kind: 'done', consumed, source: { version: 1 } };
  if (proto !== 'TCP4' && proto !== 'TCP6') return { kind: 'bad', reason: `v1 protocol must be TCP4, TCP6 or UNKNOWN, got ${JSON.stringify(proto ?? '')}` };
  if (parts.length !== 6) return { kind: 'bad', reason: 'v1 header needs source, destination and both ports' };
  const [, , src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const family = proto === 'TCP4' ? 4 : 6;
  if (isIP(src) !== family || isIP(dst) !== family) return { kind: 'bad', reason: `v1 addresses are not ${proto} addresses` };
  const sp = port(sport);
  const dp = port(dport);
  if (sp === null || dp === null) return { kind: 'bad', reason: 'v1 ports must be 0-65535 without leading zeros' };
  return { kind: 'done', consumed, source: { version: 1, remoteAddress: src, remotePort: sp, localAddress: dst, localPort: dp } };
}

function port(s: string): number | null {
  if (!/^(?:0|[1-9]\d{0,4})$/.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}

function parseV2(buf: Buffer): ProxyParse {
  if (buf.length < 16) return { kind: 'more' };
  const verCmd = buf[12]!;
  const famProto = buf[13]!;
  const len = buf.readUInt16BE(14);
  if (verCmd >> 4 !== 2) return { kind: 'bad', reason: `v2 version nibble must be 2, got ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd !== 0 && cmd !== 1) return { kind: 'bad', reason: `v2 command must be LOCAL or PROXY, got ${cmd}` };
  if (16 + len > V2_MAX_LENGTH) return { kind: 'bad', reason: 'v2 header too long' };
  if (buf.length < 16 + len) return { kind: 'more' };
  const consumed = 16 + len;
  // LOCAL: the balancer speaks for itself (health check); the address block is ignored.
  if (cmd === 0) return { kind: 'done', consumed, source: { version: 2 } };
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  const body = buf.subarray(16, consumed);
  if (family === 0 || family === 3) return { kind: 'done', consumed, source: { version: 2 } }; // UNSPEC, UNIX
  if (transport !== 1 && transport !== 2) return { kind: 'bad', reason: `v2 transport must be STREAM or DGRAM, got ${transport}` };
  if (family === 1) {
    if (len < 12) return { kind: 'bad', reason: 'v2 IPv4 address block shorter than 12 bytes' };
    return {
      kind: 'done',
      consumed,
      source: { version: 2, remoteAddress: ipv4(body.subarray(0, 4)), localAddress: ipv4(body.subarray(4, 8)), remotePort: body.readUInt16BE(8), localPort: body.readUInt16BE(10) },
    };
  }
  if (family === 2) {
    if (len < 36) return { kind: 'bad', reason: 'v2 IPv6 address block shorter than 36 bytes' };
    return {
      kind: 'done',
      consumed,
      source: { version: 2, remoteAddress: ipv6(body.subarray(0, 16)), localAddress: ipv6(body.subarray(16, 32)), remotePort: body.readUInt16BE(32), localPort: body.readUInt16BE(34) },
    };
  }
  return { kind: 'bad', reason: `v2 address family ${family} unknown` };
}

function ipv4(b: Buffer): string {
  return [...b].join('.');
}

function ipv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Compressed the canonical way (RFC 5952), through URL's normaliser.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/** Builds a header (tests, benches, and anyone who fronts a backend with PROXY). */
export function buildProxyHeader(version: 1 | 2, src: { address: string; port: number }, dst: { address: string; port: number }): Buffer {
  const family = isIP(src.address);
  if (version === 1) return Buffer.from(`PROXY TCP${family} ${src.address} ${dst.address} ${src.port} ${dst.port}\r\n`, 'latin1');
  const addr = family === 4 ? Buffer.alloc(12) : Buffer.alloc(36);
  const put = (ip: string, at: number) => {
    if (family === 4) ip.split('.').forEach((o, i) => addr.writeUInt8(Number(o), at + i));
    else expandV6(ip).forEach((g, i) => addr.writeUInt16BE(g, at + i * 2));
  };
  const w = family === 4 ? 4 : 16;
  put(src.address, 0);
  put(dst.address, w);
  addr.writeUInt16BE(src.port, 2 * w);
  addr.writeUInt16BE(dst.port, 2 * w + 2);
  const head = Buffer.alloc(4);
  head.writeUInt8(0x21, 0);
  head.writeUInt8(family === 4 ? 0x11 : 0x21, 1);
  head.writeUInt16BE(addr.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, addr]);
}

function expandV6(ip: string): number[] {
  const [a = '', b] = ip.split('::');
  const left = a ? a.split(':') : [];
  const right = b !== undefined && b ? b.split(':') : [];
  const fill = b !== undefined ? new Array<string>(8 - left.length - right.length).fill('0') : [];
  return [...left, ...fill, ...right].map((g) => parseInt(g, 16));
}
